"""A keyed event-time window store: readings in, one summary per (key, window) out.

Layout. Event time is cut into *slots* of one hop (``slot = floor((t - offset) / hop)``);
window ``k`` covers slots ``k .. k + m - 1`` with ``m = size / hop`` (1 for tumbling windows),
i.e. ``[offset + k·hop, offset + k·hop + size)``. A batch is split by slot only (a batch
usually spans one or two slots) and each part is appended, all keys together, as one chunk to
its slot; a window tracks which keys it holds in a boolean array indexed by key code. Closing a
window concatenates its slots and computes the statistics of every key at once with
:func:`~edge_runtime.aggregation.stats.grouped_stats`. So the Python work is per batch and slot
on the way in and per emitted summary on the way out, never per reading, and percentiles are
exact because the values themselves are kept until the window closes.

Time. The watermark is ``max event time seen - allowed_lateness``; window ``k`` closes when the
watermark reaches its end. Closed windows form a prefix of the window indices: every window
below ``frontier`` is closed, whether it held data or not. A reading is *late* for the
windows below the frontier that it belongs to. With ``late_policy = "drop"`` it is left out of
them; with ``"correct"`` each such window still within ``correction_horizon_s`` (of event time
after its end) is recomputed and re-emitted as a ``"correction"`` with the next revision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import numpy as np

from edge_runtime.aggregation.buffers import (
    FloatArray,
    KeyArray,
    SlotArray,
    SlotBuffer,
    WindowBook,
)
from edge_runtime.aggregation.spec import WindowSpec
from edge_runtime.aggregation.stats import PERCENTILES, grouped_stats
from edge_runtime.aggregation.window_state import WindowState, decode_state, encode_state
from edge_runtime.types import ReadingBatch, Summary

__all__ = ["CountFn", "WindowStore"]

CountFn = Callable[[str, int], None]

_NEVER = -(2**62)  # window index below every real one: "nothing closed yet"
_emit_order = attrgetter("window_end", "key")


def _no_count(event: str, n: int) -> None:
    del event, n


class WindowStore:
    """Windows of one pipeline. Not thread-safe; every method returns the summaries it completes.

    ``count(event, n)`` receives the counters: ``readings``, ``missing``, ``future_dropped``,
    ``invalid_time``, ``late_dropped``, ``late_corrected``, ``windows_emitted``,
    ``corrections_emitted``, ``forced_close``. In hopping windows a reading may be late for its
    older windows only; it is then counted once (as dropped and/or corrected) and still joins
    its open windows.
    """

    def __init__(self, spec: WindowSpec, *, pipeline: str, count: CountFn = _no_count) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self._count = count
        self._size = spec.size_s
        self._hop = spec.hop
        self._offset = spec.offset_s
        self._m = spec.windows_per_reading
        self._lateness = spec.allowed_lateness_s
        self._correct = spec.late_policy == "correct"
        self._horizon = spec.correction_horizon_s
        self._stats = tuple(spec.stats)
        self._by_value = not PERCENTILES.keys().isdisjoint(self._stats)
        self._slots: dict[int, SlotBuffer] = {}
        self._windows: dict[int, WindowBook] = {}
        self._frontier = _NEVER  # every window index below it is closed
        self._evicted = _NEVER  # data of windows and slots up to it is gone
        self._open = 0  # open (key, window) pairs
        self._max_event = -math.inf
        self._watermark = -math.inf
        self._last_arrival: float | None = None
        self._names: list[str] = []
        self._incomplete_before: float | None = None  # windows starting earlier: flagged
        self._reemit: tuple[float, int] | None = None  # (before, floor): see raise_revisions
        self._part: int | None = None  # this run's number when it emits windows as parts

    # -- public ----------------------------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """Event time up to which windows are closed (-inf before the first reading)."""
        return self._watermark

    @property
    def open_windows(self) -> int:
        """Number of open (key, window) pairs."""
        return self._open

    def add(self, batch: ReadingBatch, now: float) -> list[Summary]:
        """Take in ``batch``; ``now`` is the site clock (for ``max_future_s`` and idling)."""
        n = len(batch)
        if n == 0:
            return []
        self._names = batch.key_table.names
        self._count("readings", n)
        keys, values, times = batch.keys, batch.values, batch.times
        limit = math.inf if self.spec.max_future_s is None else now + self.spec.max_future_s
        earliest, latest = float(times.min()), float(times.max())
        if not (earliest > -math.inf and latest <= limit):  # also true when a time is NaN
            keys, values, times = self._drop_bad_times(keys, values, times, limit)
            if times.shape[0] == 0:
                return []
            latest = float(times.max())
        bad = ~np.isfinite(values)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            self._count("missing", n_bad)
            values = np.where(bad, np.nan, values)
        slots = np.floor((times - self._offset) / self._hop).astype(np.int64)
        self._last_arrival = now

        out: list[Summary] = []
        touched: dict[int, KeyArray] = {}
        if int(slots.min()) - (self._m - 1) < self._frontier:
            keys, values, slots, touched = self._sort_late(keys, values, slots)
        self._store(keys, values, slots)
        if touched:
            out.extend(self._correct_windows(touched))
        self._max_event = max(self._max_event, latest)
        out.extend(self._advance(self._max_event - self._lateness))
        out.extend(self._enforce_bound())
        if len(out) > 1:
            out.sort(key=_emit_order)
        return out

    def tick(self, now: float) -> list[Summary]:
        """Idle handling: after ``idle_timeout_s`` without readings, move the watermark on by
        the processing time elapsed since the last reading."""
        timeout = self.spec.idle_timeout_s
        if timeout is None or self._last_arrival is None:
            return []
        idle = now - self._last_arrival
        if idle < timeout:
            return []
        out = self._advance(self._max_event - self._lateness + idle)
        out.sort(key=_emit_order)
        return out

    def flush(self) -> list[Summary]:
        """Close every open window now (shutdown). After :meth:`number_parts`, each is
        flagged as a part: the next run may emit the rest of its readings."""
        out: list[Summary] = []
        cut = self._part is not None
        for k in sorted(k for k in self._windows if k >= self._frontier):
            out.extend(self._close(k, forced=False, cut=cut))
            self._frontier = k + 1
        self._evict()
        out.sort(key=_emit_order)
        return out

    def gauges(self, now: float) -> dict[str, float]:
        open_idx = sum(1 for k in self._windows if k >= self._frontier)
        wm = self._watermark
        return {
            "open_windows": float(self._open),
            "open_window_starts": float(open_idx),
            "retained_windows": float(len(self._windows) - open_idx),
            "buffered_readings": float(sum(s.size for s in self._slots.values())),
            "watermark_lag_s": now - wm if math.isfinite(wm) else 0.0,
            "event_time_lag_s": now - self._max_event if math.isfinite(self._max_event) else 0.0,
        }

    # -- ingest ----------------------------------------------------------------------------------

    def _drop_bad_times(
        self, keys: KeyArray, values: FloatArray, times: FloatArray, limit: float
    ) -> tuple[KeyArray, FloatArray, FloatArray]:
        finite = np.isfinite(times)
        future = finite & (times > limit)
        n_future = int(np.count_nonzero(future))
        self._count("future_dropped", n_future)
        self._count("invalid_time", int(times.shape[0] - np.count_nonzero(finite)))
        ok = finite & ~future
        return keys[ok], values[ok], times[ok]

    def _data_floor(self) -> int:
        """Largest window index whose readings are no longer kept (or were never needed)."""
        if not self._correct:
            return self._frontier - 1
        edge = self._watermark - self._horizon - self._offset - self._size
        if not math.isfinite(edge):
            return _NEVER
        return min(self._frontier - 1, math.floor(edge / self._hop))

    def _sort_late(
        self, keys: KeyArray, values: FloatArray, slots: SlotArray
    ) -> tuple[KeyArray, FloatArray, SlotArray, dict[int, KeyArray]]:
        """Count late readings; keep those whose newest window still has its data; return
        the (closed window → keys) pairs to correct."""
        first = slots - (self._m - 1)
        floor = self._data_floor()
        late = first < self._frontier
        self._count("late_dropped", int(np.count_nonzero(late & (first <= floor))))
        touched: dict[int, KeyArray] = {}
        lo = np.maximum(first, floor + 1)
        hi = np.minimum(slots, self._frontier - 1)
        fix = lo <= hi
        if fix.any():
            self._count("late_corrected", int(np.count_nonzero(fix)))
            idx: list[SlotArray] = []
            codes: list[KeyArray] = []
            for d in range(self._m):
                sel = fix & (lo + d <= hi)
                idx.append(lo[sel] + d)
                codes.append(keys[sel])
            wins = np.concatenate(idx)
            wkeys = np.concatenate(codes)
            for k in np.unique(wins).tolist():
                touched[k] = np.unique(wkeys[wins == k])
        keep = slots > floor
        if keep.all():
            return keys, values, slots, touched
        return keys[keep], values[keep], slots[keep], touched

    def _store(self, keys: KeyArray, values: FloatArray, slots: SlotArray) -> None:
        if slots.shape[0] == 0:
            return
        first, last = int(slots.min()), int(slots.max())
        if first == last:
            self._store_slot(first, keys, values)
            return
        order = np.argsort(slots, kind="stable")
        ordered = slots[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts = [0, *cuts.tolist()]
        ends = [*cuts.tolist(), int(ordered.shape[0])]
        for a, b in zip(starts, ends, strict=True):
            part = order[a:b]
            self._store_slot(int(ordered[a]), keys[part], values[part])

    def _store_slot(self, j: int, keys: KeyArray, values: FloatArray) -> None:
        slot = self._slots.get(j)
        if slot is None:
            slot = self._slots[j] = SlotBuffer(by_value=self._by_value)
        slot.append(keys, values)
        capacity = len(self._names)
        marks = keys if self._m == 1 else np.unique(keys)
        for k in range(max(j - self._m + 1, self._frontier), j + 1):
            window = self._windows.get(k)
            if window is None:
                window = self._windows[k] = self._new_window(k, capacity)
            self._open += window.mark(marks, capacity)

    # -- closing ---------------------------------------------------------------------------------

    def _advance(self, watermark: float) -> list[Summary]:
        if watermark <= self._watermark:
            return []
        self._watermark = watermark
        frontier = math.floor((watermark - self._offset - self._size) / self._hop) + 1
        out: list[Summary] = []
        if frontier > self._frontier:
            for k in sorted(k for k in self._windows if self._frontier <= k < frontier):
                out.extend(self._close(k, forced=False))
            self._frontier = frontier
        self._evict()
        return out

    def _enforce_bound(self) -> list[Summary]:
        limit = self.spec.max_open_windows
        if self._open <= limit:
            return []
        out: list[Summary] = []
        for k in sorted(k for k in self._windows if k >= self._frontier):
            out.extend(self._close(k, forced=True))
            self._frontier = k + 1
            if self._open <= limit:
                break
        self._evict()
        return out

    def _evict(self) -> None:
        floor = self._data_floor()
        if floor <= self._evicted:
            return
        for k in [k for k in self._windows if k <= floor]:
            del self._windows[k]
        for j in [j for j in self._slots if j <= floor]:
            del self._slots[j]
        self._evicted = floor

    def _window_data(self, k: int) -> tuple[KeyArray, FloatArray]:
        parts = [self._slots[j].arrays() for j in range(k, k + self._m) if j in self._slots]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _bounds(self, k: int) -> tuple[float, float]:
        start = self._offset + k * self._hop
        return start, start + self._size

    def _attrs(self, start: float, *, forced: bool = False, cut: bool = False) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if forced:  # closed before the watermark reached its end: say so downstream
            attrs["forced_close"] = True
        if cut or (self._incomplete_before is not None and start < self._incomplete_before):
            # input of this window may have been lost in a crash, or is in another part
            attrs["incomplete"] = True
            if self._part is not None:
                attrs["part"] = self._part
        return attrs

    def _close(self, k: int, *, forced: bool, cut: bool = False) -> list[Summary]:
        window = self._windows[k]
        self._open -= window.nkeys
        keys, values = self._window_data(k)
        codes, rows = grouped_stats(keys, values, self._stats, sorted_runs=self._by_value)
        start, end = self._bounds(k)
        names, pipeline = self._names, self.pipeline
        pairs = zip(codes.tolist(), rows, strict=True)
        attrs = self._attrs(start, forced=forced, cut=cut)
        floor = window.floor
        if floor:  # emitted again after a crash that lost input: above any earlier result
            out = [
                Summary(pipeline, names[code], start, end, row, revision=floor, attrs=dict(attrs))
                for code, row in pairs
            ]
            window.revisions.update((code, floor) for code in codes.tolist())
            if attrs:
                self._count("forced_close" if forced else "incomplete_emitted", len(out))
        elif attrs:
            out = [
                Summary(pipeline, names[code], start, end, row, attrs=dict(attrs))
                for code, row in pairs
            ]
            self._count("forced_close" if forced else "incomplete_emitted", len(out))
        else:
            out = [Summary(pipeline, names[code], start, end, row) for code, row in pairs]
        self._count("windows_emitted", len(out))
        return out

    def _correct_windows(self, touched: dict[int, KeyArray]) -> Iterable[Summary]:
        capacity = len(self._names)
        for k in sorted(touched):
            wanted = touched[k]
            window = self._windows.get(k)
            if window is None:  # a closed window that had no readings until now
                window = self._windows[k] = self._new_window(k, capacity)
            window.grow(capacity)
            seen = dict(zip(wanted.tolist(), window.present[wanted].tolist(), strict=True))
            window.mark(wanted, capacity)
            keys, values = self._window_data(k)
            sel = np.isin(keys, wanted)
            codes, rows = grouped_stats(keys[sel], values[sel], self._stats)
            start, end = self._bounds(k)
            attrs = self._attrs(start)
            for code, row in zip(codes.tolist(), rows, strict=True):
                prior = window.revisions.get(code, 0 if seen[code] else -1)
                revision = max(prior + 1, window.floor)
                window.revisions[code] = revision
                name = self._names[code]
                if prior >= 0:
                    self._count("corrections_emitted", 1)
                    yield Summary(
                        self.pipeline, name, start, end, row, "correction", revision, dict(attrs)
                    )
                else:  # the key had no summary for this window yet: this is its first
                    self._count("windows_emitted", 1)
                    yield Summary(
                        self.pipeline, name, start, end, row, revision=revision, attrs=dict(attrs)
                    )

    # -- state (checkpoints) ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Open windows, retained data, watermark and key names as one blob (see
        :mod:`~edge_runtime.aggregation.window_state`)."""
        return encode_state(
            WindowState(
                geometry=self._geometry(),
                stats=list(self._stats),
                frontier=self._frontier,
                evicted=self._evicted,
                max_event=self._max_event,
                watermark=self._watermark,
                incomplete_before=self._incomplete_before,
                names=self._names,
                slots=self._slots,
                windows=self._windows,
            )
        )

    def restore(
        self, data: bytes, key_table: dict[str, int], names: list[str], now: float
    ) -> list[str]:
        """Load a :meth:`snapshot` into this (empty) store; key names are interned into
        ``key_table`` (whose ``names`` list is ``names``) and codes remapped to it. Returns
        what was dropped because it no longer fits the current spec (one line each)."""
        state = decode_state(data, key_table, names, by_value=self._by_value)
        self._names = names
        geometry = self._geometry()
        self._max_event = state.max_event
        self._last_arrival = now
        dropped: list[str] = []
        if state.geometry != geometry:
            pairs = state.open_pairs()
            dropped.append(
                f"{pairs} open (key, window) pairs and {state.readings()} readings: the "
                f"window geometry changed from (kind, size, hop, offset) = {state.geometry} "
                f"to {geometry}"
            )
            self._count("restore_dropped_windows", pairs)
            # the new windows that overlap the dropped readings never see them: flag them
            self._incomplete_before = self._max_event
            return dropped
        if state.stats != list(self._stats):
            dropped.append(
                f"nothing: statistics changed from {state.stats} to {list(self._stats)}; "
                "open windows are summarised with the new ones"
            )
        self._frontier = state.frontier
        self._evicted = state.evicted
        self._watermark = state.watermark
        self._incomplete_before = state.incomplete_before
        self._slots.update(state.slots)
        self._windows.update(state.windows)
        self._open += state.open_pairs()
        return dropped

    def _geometry(self) -> list[Any]:
        return [self.spec.kind, self._size, self._hop, self._offset]

    def raise_revisions(self, floor: int, before: float) -> None:
        """Give every result of the windows held now (open, or closed and still correctable),
        and of those created later that start before event time ``before``, revision
        ``floor`` or higher: a run that crashed may have emitted them with other results (see
        :class:`~edge_runtime.pipelines.api.RestoreInfo`)."""
        for window in self._windows.values():
            window.floor = max(window.floor, floor)
        self._reemit = (before, floor)

    def _new_window(self, k: int, capacity: int) -> WindowBook:
        window = WindowBook(capacity)
        if self._reemit is not None and self._bounds(k)[0] < self._reemit[0]:
            window.floor = self._reemit[1]
        return window

    def number_parts(self, part: int) -> None:
        """Emit windows as *parts* numbered ``part`` (this run's start number; see
        :attr:`~edge_runtime.pipelines.api.RestoreInfo.part`): :meth:`flush` flags what it
        cuts, and every window flagged incomplete carries ``attrs["part"]``, so that the core
        keeps it beside the other parts of its window."""
        self._part = part

    def mark_incomplete_before(self, when: float) -> None:
        """Flag as possibly incomplete every window starting before event time ``when``."""
        current = self._incomplete_before
        self._incomplete_before = when if current is None else max(current, when)
