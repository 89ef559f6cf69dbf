"""Forwarding accepted summaries to NATS JetStream."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from edge_runtime.core.config import NatsForwardConfig
from edge_runtime.errors import EdgeRuntimeError, UplinkError
from edge_runtime.lifecycle import Component
from edge_runtime.types import Envelope

__all__ = ["NatsForwarder"]

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class NatsForwarder(Component):
    """Publishes each summary to JetStream with its envelope id as ``Nats-Msg-Id``."""

    def __init__(self, config: NatsForwardConfig) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self._nc: Any = None
        self._js: Any = None

    async def start(self) -> None:
        try:
            import nats  # noqa: PLC0415 (optional dependency)
            from nats.js.api import StreamConfig  # noqa: PLC0415
        except ImportError as exc:
            raise EdgeRuntimeError(
                "forwarding to NATS needs nats-py: pip install 'edge-runtime[core]'"
            ) from exc
        self._nc = await nats.connect(self.config.url, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        prefix = self.config.subject_prefix
        await self._js.add_stream(
            StreamConfig(
                name=self.config.stream,
                subjects=[f"{prefix}.>"],
                duplicate_window=self.config.duplicate_window_s,
            )
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

    async def forward(self, envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            try:
                ack = await self._js.publish(
                    self.subject(env),
                    orjson.dumps(env.to_dict()),
                    headers={"Nats-Msg-Id": env.id},
                )
            except Exception as exc:  # nats-py raises several unrelated types on a lost link
                self.counters["failed"] += 1
                raise UplinkError(f"JetStream publish failed: {exc}") from exc
            self.counters["duplicate" if ack.duplicate else "forwarded"] += 1

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
