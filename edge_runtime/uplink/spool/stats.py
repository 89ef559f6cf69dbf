"""Backlog figures of the spool: depth, age, drain rate, counters and commit latencies."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["DROP_REASONS", "Figures", "LatencyWindow", "RateWindow", "SpoolStats"]

#: Reasons a record leaves the spool without being sent (labels of ``SpoolStats.dropped``):
#: past its TTL, dropped at the size cap, lost to damage of the file (a failed checksum, an
#: unreadable page, a lost WAL; see ``edge_runtime.uplink.spool._ledger`` for how exact).
DROP_REASONS = ("expired_ttl", "dropped_cap", "corrupt_records")


class LatencyWindow:
    """The most recent ``size`` latencies (seconds), for p50/p99 without a histogram library."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentile(self, q: float) -> float | None:
        if not self._values:
            return None
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
        return ordered[index]

    def __len__(self) -> int:
        return len(self._values)


class RateWindow:
    """Events per second over a moving window of ``span_s`` seconds (monotonic time)."""

    def __init__(self, span_s: float = 30.0) -> None:
        self._span = span_s
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, count: int) -> None:
        if count <= 0:
            return
        self._events.append((now, count))
        self._total += count
        self._expire(now)

    def rate(self, now: float) -> float:
        self._expire(now)
        if not self._events:
            return 0.0
        span = max(now - self._events[0][0], 1.0)
        return self._total / span

    def _expire(self, now: float) -> None:
        horizon = now - self._span
        while self._events and self._events[0][0] < horizon:
            _, count = self._events.popleft()
            self._total -= count


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool's backlog and counters (counters count since ``open``).

    ``recovered_records``: records copied out of a damaged file into its rebuilt replacement;
    ``recoveries``: files rebuilt; records lost to damage are ``dropped["corrupt_records"]``
    (also :attr:`corrupt_records`). ``full``: at the size cap with ``reject_new``;
    ``disk_full``: the disk is full (appends refused, counted in ``rejected_disk_full``;
    ``disk_full_events`` counts the times it filled); ``acks_deferred``: acknowledged records
    whose delete waited for room; ``reserve_bytes``: the disk reserve held now; ``error``: the
    last failure of the spool (a commit or a call that failed, the writer stopped), None once
    a commit succeeds again.
    """

    depth: int
    depth_by_priority: tuple[int, int, int]
    leased: int
    payload_bytes: int
    disk_bytes: int
    file_bytes: int
    max_bytes: int
    oldest_pending_age_s: float | None
    drain_rate_per_s: float
    eta_s: float | None
    appended: int
    acked: int
    compacted_parts: int
    compacted_records: int
    dropped: Mapping[str, int]
    recovered_records: int
    recoveries: int
    rejected_full: int
    commits: int
    mean_commit_records: float
    commit_p50_ms: float | None
    commit_p99_ms: float | None
    append_p50_ms: float | None
    append_p99_ms: float | None
    full: bool
    extra: Mapping[str, float] = field(default_factory=dict)
    disk_full: bool = False
    disk_full_events: int = 0
    rejected_disk_full: int = 0
    acks_deferred: int = 0
    reserve_bytes: int = 0
    error: str | None = None

    @property
    def corrupt_records(self) -> int:
        return self.dropped.get("corrupt_records", 0)

    def as_dict(self) -> dict[str, object]:
        """A flat dict for logs and metrics exporters."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                for key, item in value.items():
                    out[f"{name}_{key}"] = item
            elif isinstance(value, tuple):
                for i, item in enumerate(value):
                    out[f"{name}_{i}"] = item
            else:
                out[name] = value
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class Figures:
    """The spool's counters and gauges: written by the writer thread, read from any thread.

    The writer thread reads ``depth`` and ``payload_bytes`` without the lock (it is their only
    writer); everything else goes through the methods.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.depth = [0, 0, 0]
        self.payload_bytes = 0
        self.used_bytes = 0
        self.oldest_created: float | None = None
        self._counters = dict.fromkeys(
            (
                "appended",
                "acked",
                "compacted_parts",
                "compacted_records",
                "recovered_records",
                "recoveries",
                "rejected_full",
                "rejected_disk_full",
                "acks_deferred",
                "commits",
                "committed_records",
            ),
            0,
        )
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._encode_s = 0.0
        self._write_s = 0.0
        self._commit_latency = LatencyWindow()
        self._append_latency = LatencyWindow()
        self._drain = RateWindow()
        self._open_check_s = 0.0
        self._error: str | None = None

    def reset(
        self,
        depth: Sequence[int],
        payload_bytes: int,
        used_bytes: int,
        *,
        recovered: int,
        rebuilt: bool,
        lost: int,
        check_s: float,
    ) -> None:
        """A file was opened (or rebuilt): take its figures and what opening it found."""
        with self._lock:
            self.depth = list(depth)
            self.payload_bytes = payload_bytes
            self.used_bytes = used_bytes
            self._counters["recovered_records"] += recovered
            self._counters["recoveries"] += int(rebuilt)
            self._dropped["corrupt_records"] += lost
            self._open_check_s += check_s

    def apply(
        self,
        depth: Sequence[int],
        nbytes: int,
        used_bytes: int,
        removed: Mapping[str, int],
        compacted: tuple[int, int],
    ) -> None:
        """A transaction committed: pending records per class changed by ``depth``."""
        with self._lock:
            for i in range(3):
                self.depth[i] += depth[i]
            self.payload_bytes += nbytes
            self.used_bytes = used_bytes
            for reason, count in removed.items():
                self._dropped[reason] = self._dropped.get(reason, 0) + count
            self._counters["compacted_parts"] += compacted[0]
            self._counters["compacted_records"] += compacted[1]

    def committed(
        self,
        *,
        appended: int,
        acked: int,
        records: int,
        times: tuple[float, float, float],
        enqueued: Sequence[float],
    ) -> None:
        """A group commit finished; ``times`` are (started, encoded, done) perf_counter values:
        the group's first work began, its rows were encoded, it was committed."""
        started, encoded, done = times
        with self._lock:
            c = self._counters
            c["appended"] += appended
            c["acked"] += acked
            c["commits"] += 1
            c["committed_records"] += records
            self._commit_latency.add(done - started)
            self._encode_s += encoded - started
            self._write_s += done - encoded
            for at in enqueued:
                self._append_latency.add(done - at)
            self._drain.add(time.monotonic(), acked)

    def rejected(self, count: int, *, disk_full: bool = False) -> None:
        with self._lock:
            self._counters["rejected_disk_full" if disk_full else "rejected_full"] += count

    def deferred(self, count: int) -> None:
        with self._lock:
            self._counters["acks_deferred"] += count

    def set_error(self, error: str | None) -> None:
        """The spool's last failure; None once it works again."""
        with self._lock:
            self._error = error

    def set_oldest(self, created_at: float | None) -> None:
        with self._lock:
            self.oldest_created = created_at

    def snapshot(
        self,
        *,
        now: float,
        leased: int,
        full: bool,
        max_bytes: int,
        file_bytes: int,
        disk_full: bool = False,
        disk_full_events: int = 0,
        reserve_bytes: int = 0,
    ) -> SpoolStats:
        """The figures as :class:`SpoolStats` (``now``: wall clock, for the oldest age)."""
        with self._lock:
            depth = tuple(self.depth)
            pending = sum(depth)
            rate = self._drain.rate(time.monotonic())
            c = self._counters
            oldest = self.oldest_created
            return SpoolStats(
                depth=pending,
                depth_by_priority=(depth[0], depth[1], depth[2]),
                leased=leased,
                payload_bytes=self.payload_bytes,
                disk_bytes=self.used_bytes,
                file_bytes=file_bytes,
                max_bytes=max_bytes,
                oldest_pending_age_s=None if oldest is None or not pending else now - oldest,
                drain_rate_per_s=rate,
                eta_s=(pending / rate) if rate > 0 else None,
                appended=c["appended"],
                acked=c["acked"],
                compacted_parts=c["compacted_parts"],
                compacted_records=c["compacted_records"],
                dropped=dict(self._dropped),
                recovered_records=c["recovered_records"],
                recoveries=c["recoveries"],
                rejected_full=c["rejected_full"],
                commits=c["commits"],
                mean_commit_records=c["committed_records"] / max(1, c["commits"]),
                commit_p50_ms=_ms(self._commit_latency.percentile(50)),
                commit_p99_ms=_ms(self._commit_latency.percentile(99)),
                append_p50_ms=_ms(self._append_latency.percentile(50)),
                append_p99_ms=_ms(self._append_latency.percentile(99)),
                full=full,
                extra={
                    "open_check_s": self._open_check_s,
                    # where the writer's time goes, per record appended (encoding) and per
                    # record appended or acked (transaction and fsync)
                    "encode_us_per_record": self._encode_s / max(1, c["appended"]) * 1e6,
                    "write_us_per_record": self._write_s / max(1, c["committed_records"]) * 1e6,
                },
                disk_full=disk_full,
                disk_full_events=disk_full_events,
                rejected_disk_full=c["rejected_disk_full"],
                acks_deferred=c["acks_deferred"],
                reserve_bytes=reserve_bytes,
                error=self._error,
            )
