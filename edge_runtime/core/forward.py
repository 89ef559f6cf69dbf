"""NATS JetStream: the core's store of record (``store = "nats"``), or a forward after SQLite.

Each summary is published with its envelope id as ``Nats-Msg-Id``, so JetStream drops one it
already has (within the stream's duplicate window) and says so in its acknowledgement. The
envelope id is derived from the revision (and from the replay namespace, see
:func:`edge_runtime.types.envelope_id`), so a correction or a re-emission of a window is a new
message, never deduplicated against the earlier result: the stream holds every revision, and a
consumer keeps the highest per window and part (:func:`~edge_runtime.core.store.result_family`),
as the SQLite store does. A
batch is published pipelined (``publish_async``) and counts as stored once every
acknowledgement is back; the server must sync each write to disk before acknowledging it
(``jetstream { sync_interval: always }``, see :class:`~edge_runtime.core.config.NatsForwardConfig`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edge_runtime.core.config import NatsForwardConfig
from edge_runtime.errors import EdgeRuntimeError, UplinkError
from edge_runtime.lifecycle import Component
from edge_runtime.types import Envelope

__all__ = ["NatsForwarder"]

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class NatsForwarder(Component):
    """Publishes summaries to JetStream with their envelope id as ``Nats-Msg-Id``."""

    def __init__(self, config: NatsForwardConfig) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self._nc: Any = None
        self._js: Any = None

    async def start(self) -> None:
        try:
            import nats  # noqa: PLC0415 (optional dependency)
            from nats.js.api import StorageType, StreamConfig  # noqa: PLC0415
        except ImportError as exc:
            raise EdgeRuntimeError(
                "forwarding to NATS needs nats-py: pip install 'edge-runtime[core]'"
            ) from exc
        try:
            self._nc = await nats.connect(self.config.url, max_reconnect_attempts=-1)
        except Exception as exc:  # nats-py raises several unrelated types
            raise UplinkError(f"cannot connect to NATS at {self.config.url}: {exc}") from exc
        self._js = self._nc.jetstream()
        prefix = self.config.subject_prefix
        await self._js.add_stream(
            StreamConfig(
                name=self.config.stream,
                subjects=[f"{prefix}.>"],
                duplicate_window=self.config.duplicate_window_s,
                storage=StorageType.FILE,
            )
        )
        version = self._nc.connected_server_version
        if (version.major, version.minor) < (2, 10):
            log.warning(
                "nats-server %s cannot sync every JetStream write to disk before acknowledging "
                "it (jetstream { sync_interval: always } needs 2.10 or later): a power cut can "
                "lose summaries it acknowledged",
                version,
            )
        log.info(
            "forwarding summaries to JetStream stream %s at %s", self.config.stream, self.config.url
        )

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.drain()

    def subject(self, env: Envelope) -> str:
        return ".".join(
            (self.config.subject_prefix, _UNSAFE.sub("_", env.site), _UNSAFE.sub("_", env.pipeline))
        )

    async def forward(self, envelopes: Sequence[Envelope]) -> list[bool]:
        """Publish and wait for every acknowledgement; returns, per envelope, whether JetStream
        already had it (a duplicate). Raises :class:`UplinkError` when any is not stored
        (the caller tries the whole batch again: the ids make that harmless)."""
        if not envelopes:
            return []
        js = self._js
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.config.publish_timeout_s):
                for env in envelopes:
                    futures.append(
                        await js.publish_async(
                            self.subject(env),
                            env.to_json(),
                            headers={"Nats-Msg-Id": env.id},
                        )
                    )
                acks = await asyncio.gather(*futures)
        except Exception as exc:  # nats-py raises several unrelated types on a lost link
            for future in futures:
                future.cancel()
            self.counters["failed"] += 1
            raise UplinkError(f"JetStream publish failed: {exc!r}") from exc
        flags = [bool(ack.duplicate) for ack in acks]
        dupes = sum(flags)
        self.counters["duplicate"] += dupes
        self.counters["forwarded"] += len(flags) - dupes
        return flags

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
