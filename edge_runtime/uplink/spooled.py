"""The durable uplink: summaries go into the spool, the spool's sender drains it to the core.

A summary is accepted (``submit`` returns) only once it is committed and fsynced in the spool;
it leaves the spool only after the core broker acknowledged it (PUBACK). A summary still in the
spool at shutdown stays on disk and goes out after the next start. A summary the spool refuses
(its disk is full, it is at its cap under ``reject_new``, it failed) is not accepted:
``submit`` raises :class:`~edge_runtime.errors.UplinkRefusedError` with the reason, counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edge_runtime.clock import Clock
from edge_runtime.errors import UplinkRefusedError
from edge_runtime.lifecycle import Component
from edge_runtime.types import Summary
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import SiteWrap, Spool, SpoolError, SpoolFullError

__all__ = ["SpooledUplink"]

log = logging.getLogger(__name__)


class SpooledUplink(Component):
    """Spool + sender behind the runtime's :class:`~edge_runtime.uplink.base.Uplink` API.

    ``async with`` opens the spool and closes it; the runtime runs :meth:`run` (the sender's
    drain loop) in its own task group.
    """

    def __init__(
        self,
        spool: Spool,
        sender: Sender,
        *,
        site_id: str,
        version: str,
        config_hash: str,
        clock: Clock,
    ) -> None:
        self.spool = spool
        self.sender = sender
        self.site_id = site_id
        self.version = version
        self.config_hash = config_hash
        self.clock = clock
        self.refused: Counter[str] = Counter()  # summaries refused, by reason

    async def start(self) -> None:
        await self.spool.start()

    async def close(self) -> None:
        await self.spool.close()

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
        no error) and the sender is connected to the core broker; the reason either way."""
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
        sender = self.sender.stats()
        if not sender.connected:
            problems.append("uplink not connected to the core broker")
        # Acknowledgements from the core, once the sender waits for them, are checked here too.
        if problems:
            return False, "; ".join(problems)
        return True, f"uplink up, {spool.depth} pending"

    async def run(self) -> None:
        await self.sender.run()

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
            "link_downs": sender.link_downs,
            "publish_failures": sender.publish_failures,
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
