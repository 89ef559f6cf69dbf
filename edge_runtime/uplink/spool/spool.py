"""The asyncio facade of the spool, for the runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_runtime.clock import Clock
from edge_runtime.lifecycle import Component
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool._maintenance import MergeFn
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError
from edge_runtime.uplink.spool.records import SpoolRecord
from edge_runtime.uplink.spool.stats import SpoolStats
from edge_runtime.uplink.spool.sync import SyncSpool, Wrap

__all__ = ["Spool"]


class Spool(Component):
    """Durable store-and-forward spool (asyncio API).

    ``async with Spool(config, data_dir=...) as spool:`` opens the file in the spool's writer
    thread (checking and repairing it when needed) and closes it cleanly on exit. Every method
    hands its work to that thread and awaits the result, so the event loop never waits on disk
    I/O. :attr:`sync` is the same spool with a blocking API.
    """

    def __init__(
        self,
        config: SpoolConfig,
        *,
        data_dir: str | Path = ".",
        clock: Clock | None = None,
        merge: MergeFn | None = None,
    ) -> None:
        self.sync = SyncSpool(config, data_dir=data_dir, clock=clock, merge=merge)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leasable = asyncio.Event()

    @property
    def config(self) -> SpoolConfig:
        return self.sync.config

    @property
    def path(self) -> Path:
        return self.sync.path

    async def start(self) -> None:
        """Open the file (checked, and rebuilt when damaged) in the writer thread."""
        self._loop = asyncio.get_running_loop()
        self.sync.add_listener(self._wake)
        try:
            await asyncio.wrap_future(self.sync.start())
        except BaseException:
            self.sync.remove_listener(self._wake)
            raise

    async def close(self) -> None:
        """Finish the queued work and close the file cleanly (safe to call twice)."""
        self.sync.remove_listener(self._wake)
        await asyncio.wrap_future(self.sync.stop())

    def _wake(self) -> None:
        # writer thread: records may have become leasable
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._leasable.set)

    async def wait_leasable(self, timeout: float | None = None) -> bool:
        """Wait until records may have become leasable (appended, released, recovered).

        Returns False on timeout. Wake-ups may be spurious: lease and see.
        """
        if self._loop is None:
            raise SpoolClosedError("the spool is not open", path=str(self.path))
        try:
            async with asyncio.timeout(timeout):
                await self._leasable.wait()
        except TimeoutError:
            return False
        self._leasable.clear()
        return True

    async def append(self, envelopes: Sequence[Envelope], priority: int | None = None) -> range:
        """Store envelopes durably; returns their sequence numbers once committed and fsynced.

        The spool assigns ``seq`` (the envelopes' own value is ignored); see
        :meth:`SyncSpool.submit_append` for ``priority``.
        """
        return await asyncio.wrap_future(self.sync.submit_append(envelopes, priority))

    async def append_summaries(
        self, summaries: Sequence[Summary], wrap: Wrap, priority: int | None = None
    ) -> range:
        """Wrap each summary with its spool-assigned ``seq`` and store it durably.

        See :meth:`SyncSpool.submit_append_summaries`; a :class:`SiteWrap` is the fast way.
        """
        return await asyncio.wrap_future(
            self.sync.submit_append_summaries(summaries, wrap, priority)
        )

    async def lease(
        self,
        limit: int,
        max_bytes: int = 1 << 62,
        *,
        backlog_budget: int | None = None,
        live_window_s: float | None = None,
    ) -> list[SpoolRecord]:
        """Lease pending records for sending (see :meth:`SyncSpool.submit_lease`)."""
        return await asyncio.wrap_future(
            self.sync.submit_lease(
                limit, max_bytes, backlog_budget=backlog_budget, live_window_s=live_window_s
            )
        )

    async def ack(self, ids: Iterable[int]) -> int:
        """Mark records as sent, once the core acknowledged them; returns how many were found."""
        return await asyncio.wrap_future(self.sync.submit_ack(ids))

    async def release(self, ids: Iterable[int] | None = None, *, mark_backlog: bool = False) -> int:
        """Return leased records to pending (see :meth:`SyncSpool.submit_release`)."""
        return await asyncio.wrap_future(self.sync.submit_release(ids, mark_backlog=mark_backlog))

    async def maintain(self) -> None:
        """Run the TTL sweep and the size-cap enforcement now; bring the ledger up to date."""
        await asyncio.wrap_future(self.sync.submit_maintain())

    def stats(self) -> SpoolStats:
        return self.sync.stats()

    @property
    def broken(self) -> str | None:
        """Why the spool refuses all work; None while it works (see :attr:`SyncSpool.broken`)."""
        return self.sync.broken
