"""The durable uplink: summaries go into the spool, the spool's sender drains it to the core.

A summary is accepted (``submit`` returns) only once it is committed and fsynced in the spool;
it leaves the spool only once the core has acknowledged that it stored it durably (the core's
acknowledgement on ``uplink.ack_topic``; with ``delivery = "broker"``, the core broker's
PUBACK). A summary still in the spool at shutdown stays on disk and goes out after the next
start. A summary the spool refuses (its disk is full, it is at its cap under ``reject_new``, it
failed) is not accepted: ``submit`` raises :class:`~edge_runtime.errors.UplinkRefusedError`
with the reason, counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edge_runtime.clock import Clock
from edge_runtime.errors import DecodeError, UplinkRefusedError
from edge_runtime.identity import SiteIdentity, open_sealed
from edge_runtime.lifecycle import Component
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.types import RawMessage, Summary
from edge_runtime.uplink.acks import CoreAck, decode_ack
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import SiteWrap, Spool, SpoolError, SpoolFullError

__all__ = ["SpooledUplink"]

log = logging.getLogger(__name__)


class SpooledUplink(Component):
    """Spool + sender behind the runtime's :class:`~edge_runtime.uplink.base.Uplink` API.

    ``async with`` opens the spool and closes it; the runtime runs :meth:`run` (the sender's
    drain loop) in its own task group. ``link`` is the sender's link to the core broker (for its
    state and its count of connections lost); ``ack_topic`` is where the core's
    acknowledgements arrive (None: ``delivery = "broker"``).
    """

    def __init__(
        self,
        spool: Spool,
        sender: Sender,
        *,
        link: MqttLink,
        site_id: str,
        version: str,
        config_hash: str,
        clock: Clock,
        ack_topic: str | None = None,
        identity: SiteIdentity | None = None,
        site_revision: str = "",
    ) -> None:
        self.spool = spool
        self.sender = sender
        self.link = link
        self.site_id = site_id
        self.version = version
        self.config_hash = config_hash
        self.site_revision = site_revision
        self.clock = clock
        self.refused: Counter[str] = Counter()  # summaries refused, by reason
        self.ack_topic = ack_topic
        self.identity = identity
        self.bad_acks = 0
        self.forged_acks = 0  # acks without a valid signature of the core (identity set)

    async def start(self) -> None:
        await self.spool.start()

    async def close(self) -> None:
        await self.spool.close()

    def revise(self, config_hash: str, site_revision: str) -> None:
        """What the site runs changed (a reload): summaries accepted from now on say so."""
        self.config_hash, self.site_revision = config_hash, site_revision

    async def submit(self, summaries: Sequence[Summary], *, replayed: bool = False) -> None:
        """Return once ``summaries`` are durable in the spool; raise
        :class:`UplinkRefusedError` (none of them accepted, counted by reason) when the spool
        refuses them."""
        if not summaries:
            return
        # SiteWrap lets the spool encode each summary straight into its stored form
        wrap = SiteWrap(
            site=self.site_id,
            created_at=self.clock.time(),
            version=self.version,
            config_hash=self.config_hash,
            replayed=replayed,
            site_revision=self.site_revision,
        )
        try:
            await self.spool.append_summaries(summaries, wrap)
        except SpoolError as exc:
            reason = exc.reason if isinstance(exc, SpoolFullError) else "spool_error"
            retry = exc.retry_after if isinstance(exc, SpoolFullError) else 1.0
            self.refused[reason] += len(summaries)
            raise UplinkRefusedError(
                f"the spool refused {len(summaries)} summaries: {exc}",
                reason=reason,
                count=len(summaries),
                retry_after=retry,
            ) from exc

    def ready(self) -> tuple[bool, str]:
        """Whether the uplink works: the spool takes summaries (no full disk, not at its cap,
        no error), the link to the core broker is up and, with core acknowledgements, none is
        overdue; the reason either way."""
        problems = []
        broken = self.spool.broken
        spool = self.spool.stats()
        if broken is not None:
            problems.append(f"spool failed: {broken}")
        elif spool.error is not None:
            problems.append(f"spool error: {spool.error}")
        if spool.disk_full:
            problems.append(
                "spool disk full: new summaries are refused until there is room "
                f"({self.refused['disk_full']} refused so far)"
            )
        if spool.full:
            problems.append("spool at max_bytes: new summaries are refused (reject_new)")
        if not self.link.is_up:
            problems.append(f"uplink not connected to the core broker ({self.link.state.value})")
        elif self.ack_topic is not None:
            overdue = self.sender.ack_overdue_s()
            if overdue > 0:
                problems.append(
                    "the core has not acknowledged summaries sent "
                    f"{overdue + self.sender.config.ack_timeout_s:.0f} s ago"
                )
        if problems:
            return False, "; ".join(problems)
        flowing = ", core acknowledgements flowing" if self.ack_topic is not None else ""
        return True, f"uplink up{flowing}, {spool.depth} pending"

    async def run(self) -> None:
        await self.sender.run()

    def receive(self, message: RawMessage) -> None:
        """A message on the uplink link's subscription: the core's acknowledgement."""
        if self.ack_topic is None or message.topic != self.ack_topic:
            return
        try:
            ack = self._open_ack(message.payload)
            if ack.site != self.site_id:
                raise DecodeError("wrong_site", f"an ack for site {ack.site!r}")
        except DecodeError as exc:
            self.bad_acks += 1
            log.warning("set aside a message on %s: %s", message.topic, exc)
            return
        self.sender.on_ack(ack)

    def _open_ack(self, payload: bytes) -> CoreAck:
        """The acknowledgement in ``payload``; with an identity, only one the core signed."""
        identity = self.identity
        if identity is None:
            return decode_ack(payload)
        try:
            sealed = open_sealed(payload, "ack")
            sealed.verify(identity.core_public)
        except DecodeError:
            self.forged_acks += 1
            raise
        ack = decode_ack(sealed.payload)
        if sealed.site != ack.site:
            self.forged_acks += 1
            raise DecodeError("wrong_site", "the signed site and the ack's site differ")
        return ack

    async def drain(self, timeout: float) -> int:
        """Give the sender up to ``timeout`` to empty the spool; what is left stays on disk."""
        try:
            async with asyncio.timeout(timeout):
                # the spool signals appends, not emptiness: look every 50 ms
                while self.spool.stats().depth > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        left = self.spool.stats().depth
        if left:
            log.warning("shutdown: %d summaries stay in the spool and go out after restart", left)
        return left

    def stats(self) -> dict[str, Any]:
        spool = self.spool.stats()
        sender = self.sender.stats()
        return {
            "state": "up" if sender.connected else "down",
            "up": 1 if sender.connected else 0,
            "delivery": sender.delivery,
            "pending": spool.depth,
            "spool_bytes": spool.disk_bytes,
            "spool_max_bytes": spool.max_bytes,
            "oldest_pending_age_s": spool.oldest_pending_age_s,
            "drain_rate_per_s": spool.drain_rate_per_s,
            "eta_s": spool.eta_s,
            "appended": spool.appended,
            "sent": sender.records_sent,
            "bytes_sent": sender.bytes_sent,
            "messages_sent": sender.messages_sent,
            "backlog_sent": sender.backlog_flagged,
            # every connection lost, whether or not a publish failed with it
            "link_downs": self.link.disconnects,
            "drain_failures": sender.link_downs,
            "publish_failures": sender.publish_failures,
            "unacked": sender.unacked,
            "oldest_unacked_age_s": sender.oldest_unacked_age_s or 0.0,
            "core_acked": sender.core_acked,
            "resent": sender.resent,
            "acks": sender.acks,
            "acks_unknown": sender.acks_unknown,
            "bad_acks": self.bad_acks,
            "forged_acks": self.forged_acks,
            "signed": self.identity is not None,
            "ack_p50_ms": sender.ack_p50_ms,
            "ack_p99_ms": sender.ack_p99_ms,
            "compacted_parts": spool.compacted_parts,
            "compacted_records": spool.compacted_records,
            "dropped": dict(spool.dropped),
            "rejected": sum(self.refused.values()),
            "refused": dict(self.refused),
            "disk_full": 1 if spool.disk_full else 0,
            "disk_full_events": spool.disk_full_events,
            "acked": spool.acked,
            "acks_deferred": spool.acks_deferred,
            "leased": spool.leased,
            "reserve_bytes": spool.reserve_bytes,
            "spool_errors": sender.spool_errors,
            "spool_error": self.spool.broken or spool.error,
            "commit_p99_ms": spool.commit_p99_ms,
        }
