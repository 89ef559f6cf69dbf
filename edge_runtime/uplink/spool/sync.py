"""The spool with a synchronous, thread-safe API: one writer thread owns the SQLite file.

Callers on any thread submit work and get a :class:`concurrent.futures.Future`; the writer
thread runs the work in submission order. Appends and acks that arrive within
``commit_interval_ms`` of each other share one transaction and one fsync (group commit), and an
append's future resolves only after that commit. The writer thread also assigns sequence
numbers and encodes envelopes: the caller's thread (the event loop) only queues the work.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from edge_runtime.clock import Clock, SystemClock
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool._maintenance import MergeFn
from edge_runtime.uplink.spool._ops import Ack, Append, Call, Gate, Op, new_future
from edge_runtime.uplink.spool._writer import Writer
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError
from edge_runtime.uplink.spool.records import Priority, SpoolRecord
from edge_runtime.uplink.spool.stats import SpoolStats

__all__ = ["SyncSpool", "Wrap"]

T = TypeVar("T")
Wrap = Callable[[Summary, int], Envelope]
"""Builds the envelope of a summary given the sequence number the spool assigned to it."""


class SyncSpool:
    """Durable store-and-forward spool with a synchronous, thread-safe API.

    Use it as a context manager (``with SyncSpool(config, data_dir=...) as spool:``) or call
    :meth:`open` and :meth:`close`. The runtime uses the asyncio facade :class:`Spool`.
    """

    def __init__(
        self,
        config: SpoolConfig,
        *,
        data_dir: str | Path = ".",
        clock: Clock | None = None,
        merge: MergeFn | None = None,
    ) -> None:
        self.config = config
        self.path = config.resolve_path(data_dir)
        self._gate = Gate()
        self._writer = Writer(config, self.path, self._gate, clock or SystemClock(), merge)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Future[None]:
        """Start the writer thread and open the file in it; the future resolves once open."""
        if self._thread is not None:
            raise SpoolError("the spool is already open", path=str(self.path))
        opened: Future[None] = new_future()
        self._thread = threading.Thread(
            target=self._writer.run,
            args=(opened,),
            name=f"spool-writer:{self.path.name}",
            daemon=True,
        )
        self._thread.start()
        return opened

    def open(self) -> None:
        self.start().result()

    def stop(self) -> Future[None]:
        """Finish the queued work, close the file cleanly and end the writer thread."""
        stopped: Future[None] = new_future()
        with self._gate.lock:
            if not self._gate.accepting:
                stopped.set_result(None)
                return stopped
            self._gate.accepting = False
            self._gate.queue.put(Call(self._writer.shutdown, stopped, stop=True))
        return stopped

    def close(self) -> None:
        self.stop().result()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SyncSpool:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the writer thread) whenever records may have become leasable."""
        self._writer.listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._writer.listeners.remove(callback)

    # -- submitting work -------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        # caller holds the gate's lock
        if not self._gate.accepting:
            reason = self._gate.broken or "the spool is not open"
            raise SpoolClosedError(reason, path=str(self.path))
        self._gate.queue.put(op)

    def submit_append(
        self, envelopes: Sequence[Envelope], priority: int | None = None
    ) -> Future[range]:
        """Store ``envelopes`` durably; the future resolves to their sequence numbers.

        The spool assigns the sequence numbers (the ``seq`` of the given envelopes is
        ignored). ``priority`` sets the class of all of them; by default alerts go to class 0,
        compacted or backlog-flagged envelopes to class 2, the rest to class 1. The writer
        thread encodes them, so the calling thread (the event loop) only queues the work.
        """
        return self._submit_append(list(envelopes), None, priority)

    def submit_append_summaries(
        self, summaries: Sequence[Summary], wrap: Wrap, priority: int | None = None
    ) -> Future[range]:
        """Wrap each summary with the sequence number the spool assigns it, then append.

        ``wrap(summary, seq)`` runs in the writer thread, in order, with the final ``seq``; it
        must be a pure function (``Envelope.wrap`` with the site's fields bound). An error it
        raises fails this append alone. Pass a :class:`SiteWrap` for that usual case: the
        spool then builds each stored document from the summary directly, without the
        envelope.
        """
        return self._submit_append(list(summaries), wrap, priority)

    def _submit_append(
        self, items: list[Any], wrap: Wrap | None, priority: int | None
    ) -> Future[range]:
        fixed = None if priority is None else int(Priority(priority))
        future: Future[range] = new_future()
        if not items:
            future.set_result(range(0))
            return future
        with self._gate.lock:
            self._put(Append(items, wrap, fixed, future, time.perf_counter()))
        return future

    def submit_ack(self, ids: Iterable[int]) -> Future[int]:
        """Mark records as sent (deletes them); the future resolves to how many were found."""
        future: Future[int] = new_future()
        with self._gate.lock:
            self._put(Ack(list(ids), future, time.perf_counter()))
        return future

    def _submit_call(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = new_future()
        with self._gate.lock:
            self._put(Call(fn, future))
        return future

    def submit_lease(
        self,
        limit: int,
        max_bytes: int,
        *,
        backlog_budget: int | None = None,
        live_window_s: float | None = None,
    ) -> Future[list[SpoolRecord]]:
        """Lease pending records for sending: alerts, then live records, then the backlog.

        Order is oldest first per stream within each lane. ``backlog_budget`` caps how many
        backlog records are taken; with ``live_window_s``, records appended longer ago than
        that move to the backlog lane and records created longer ago are flagged backlog.
        Leased records are not leased again until :meth:`submit_release`.
        """
        return self._submit_call(
            lambda: self._writer.lease(limit, max_bytes, backlog_budget, live_window_s)
        )

    def submit_release(
        self, ids: Iterable[int] | None = None, *, mark_backlog: bool = False
    ) -> Future[int]:
        """Return leased records (all of them when ``ids`` is None) to pending.

        ``mark_backlog`` also moves every record appended so far into the backlog lane: call
        it when the link to the core went down.
        """
        id_list = None if ids is None else list(ids)
        return self._submit_call(lambda: self._writer.release(id_list, mark_backlog))

    def submit_maintain(self) -> Future[None]:
        """Run the TTL sweep and the size-cap enforcement now, and bring the side ledger's
        figures up to date."""
        return self._submit_call(self._writer.maintain)

    # sync conveniences (tests, bench, tools)

    def append(self, envelopes: Sequence[Envelope], priority: int | None = None) -> range:
        return self.submit_append(envelopes, priority).result()

    def append_summaries(
        self, summaries: Sequence[Summary], wrap: Wrap, priority: int | None = None
    ) -> range:
        return self.submit_append_summaries(summaries, wrap, priority).result()

    def ack(self, ids: Iterable[int]) -> int:
        return self.submit_ack(ids).result()

    def lease(
        self,
        limit: int,
        max_bytes: int = 1 << 62,
        *,
        backlog_budget: int | None = None,
        live_window_s: float | None = None,
    ) -> list[SpoolRecord]:
        return self.submit_lease(
            limit, max_bytes, backlog_budget=backlog_budget, live_window_s=live_window_s
        ).result()

    def release(self, ids: Iterable[int] | None = None, *, mark_backlog: bool = False) -> int:
        return self.submit_release(ids, mark_backlog=mark_backlog).result()

    def maintain(self) -> None:
        self.submit_maintain().result()

    # -- figures ---------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        """A snapshot of the backlog and the counters (safe from any thread)."""
        return self._writer.snapshot()

    @property
    def broken(self) -> str | None:
        """Why the spool refuses all work (it failed to open, or its writer stopped); None
        while it works or before it was opened."""
        return self._gate.broken
