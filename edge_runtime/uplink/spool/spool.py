"""The asyncio facade of the spool, for the runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from edge_runtime.clock import Clock
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool._maintenance import MergeFn
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.core import SpoolCore, Wrap
from edge_runtime.uplink.spool.errors import SpoolClosedError
from edge_runtime.uplink.spool.records import SpoolRecord
from edge_runtime.uplink.spool.stats import SpoolStats

__all__ = ["Spool"]


class Spool:
    """Durable store-and-forward spool (asyncio API).

    ``async with Spool(config, data_dir=...) as spool:`` opens the file in the spool's writer
    thread (checking and repairing it when needed) and closes it cleanly on exit. Every method
    hands its work to that thread and awaits the result, so the event loop never waits on disk
    I/O. :attr:`core` is the same spool with a blocking API.
    """

    def __init__(
        self,
        config: SpoolConfig,
        *,
        data_dir: str | Path = ".",
        clock: Clock | None = None,
        merge: MergeFn | None = None,
    ) -> None:
        self.core = SpoolCore(config, data_dir=data_dir, clock=clock, merge=merge)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leasable = asyncio.Event()

    @property
    def config(self) -> SpoolConfig:
        return self.core.config

    @property
    def path(self) -> Path:
        return self.core.path

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.core.add_listener(self._wake)
        try:
            await asyncio.wrap_future(self.core.start())
        except BaseException:
            self.core.remove_listener(self._wake)
            raise

    async def close(self) -> None:
        self.core.remove_listener(self._wake)
        await asyncio.wrap_future(self.core.stop())

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
        :meth:`SpoolCore.submit_append` for ``priority``.
        """
        return await asyncio.wrap_future(self.core.submit_append(envelopes, priority))

    async def append_summaries(
        self, summaries: Sequence[Summary], wrap: Wrap, priority: int | None = None
    ) -> range:
        """Wrap each summary with its spool-assigned ``seq`` and store it durably.

        See :meth:`SpoolCore.submit_append_summaries`; a :class:`SiteWrap` is the fast way.
        """
        return await asyncio.wrap_future(
            self.core.submit_append_summaries(summaries, wrap, priority)
        )

    async def lease(
        self,
        limit: int,
        max_bytes: int = 1 << 62,
        *,
        backlog_budget: int | None = None,
        live_window_s: float | None = None,
    ) -> list[SpoolRecord]:
        """Lease pending records for sending (see :meth:`SpoolCore.submit_lease`)."""
        return await asyncio.wrap_future(
            self.core.submit_lease(
                limit, max_bytes, backlog_budget=backlog_budget, live_window_s=live_window_s
            )
        )

    async def ack(self, ids: Iterable[int]) -> int:
        """Mark records as sent, once the core acknowledged them; returns how many were found."""
        return await asyncio.wrap_future(self.core.submit_ack(ids))

    async def release(self, ids: Iterable[int] | None = None, *, mark_backlog: bool = False) -> int:
        """Return leased records to pending (see :meth:`SpoolCore.submit_release`)."""
        return await asyncio.wrap_future(self.core.submit_release(ids, mark_backlog=mark_backlog))

    async def maintain(self) -> None:
        """Run the TTL sweep and the size-cap enforcement now."""
        await asyncio.wrap_future(self.core.submit_maintain())

    def stats(self) -> SpoolStats:
        return self.core.stats()
