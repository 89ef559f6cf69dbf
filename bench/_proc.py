"""CPU and machine figures from /proc, for the benchmarks (Linux only).

``tree_cpu(pid)`` is the user + system CPU time of a process and all its descendants (children
that have exited and been waited for are included through the parent's cutime/cstime);
``MachineSampler`` records the load average and the share of CPU time stolen by the hypervisor
while a phase runs, so that every figure can be printed beside the state of the machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Machine", "MachineSampler", "children", "proc_cpu", "tree_cpu"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may hold spaces: split after its last ')'
    return raw[raw.rindex(")") + 2 :].split()


def proc_cpu(pid: int, *, with_children: bool = True) -> float:
    """CPU-seconds (utime + stime, plus the waited-for children's) of one process; 0 if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def tree_cpu(pid: int) -> float:
    """CPU-seconds of ``pid`` and its live descendants (and their waited-for children)."""
    return proc_cpu(pid) + sum(proc_cpu(c) for c in children(pid))


def _cpu_jiffies() -> tuple[int, int]:
    """(total, steal) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is already
    # counted in user and nice
    total = sum(values[:8])
    return total, values[7] if len(values) > 7 else 0


@dataclass(frozen=True)
class Machine:
    """The machine while one figure was measured."""

    load1_start: float
    load1_end: float
    steal_pct: float
    busy_pct: float
    seconds: float

    def brief(self) -> str:
        return (
            f"load {self.load1_start:.2f}->{self.load1_end:.2f}, "
            f"busy {self.busy_pct:.0f}%, steal {self.steal_pct:.1f}%"
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "load1_start": self.load1_start,
            "load1_end": self.load1_end,
            "steal_pct": self.steal_pct,
            "busy_pct": self.busy_pct,
            "seconds": self.seconds,
        }


def _idle_jiffies() -> int:
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(first[4]) + int(first[5])


class MachineSampler:
    """``with MachineSampler() as m: ...`` then ``m.result``: load and steal over the block."""

    def __enter__(self) -> MachineSampler:
        self._load = os.getloadavg()[0]
        self._total, self._steal = _cpu_jiffies()
        self._idle = _idle_jiffies()
        self._t = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        total, steal = _cpu_jiffies()
        idle = _idle_jiffies()
        span = max(total - self._total, 1)
        self.result = Machine(
            load1_start=self._load,
            load1_end=os.getloadavg()[0],
            steal_pct=100.0 * (steal - self._steal) / span,
            busy_pct=100.0 * (1 - (idle - self._idle) / span),
            seconds=time.monotonic() - self._t,
        )
