"""Machine-readable results of a benchmark (``--json PATH``), for ``bench/run``'s report.

A bench records each figure with the baseline it is compared with (measured in the same run),
and the machine's load and steal while it was measured::

    results = Results("bench_spool", quick=True)
    with results.phase("append"):
        ...
    results.figure("append", "durable append", rate, "summaries/s",
                   baseline=("bare SQLite loop", bare))
    results.write(path)

Ratios are value / baseline; ``better`` says which direction is good ("higher" or "lower").
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._proc import Machine, MachineSampler

__all__ = ["Results"]


class Results:
    def __init__(self, bench: str, *, quick: bool) -> None:
        self.bench = bench
        self.quick = quick
        self.figures: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.machines: dict[str, Machine] = {}
        self.started = time.time()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the machine's load and steal while the block runs, under ``name``."""
        with MachineSampler() as sampler:
            yield
        self.machines[name] = sampler.result

    def figure(
        self,
        phase: str,
        label: str,
        value: float,
        unit: str,
        *,
        baseline: tuple[str, float] | None = None,
        better: str = "higher",
        note: str = "",
        machine: Machine | dict[str, float] | None = None,
    ) -> None:
        m = machine if machine is not None else self.machines.get(phase)
        row: dict[str, Any] = {
            "bench": self.bench,
            "phase": phase,
            "label": label,
            "value": value,
            "unit": unit,
            "better": better,
            "note": note,
            "machine": m.to_dict() if isinstance(m, Machine) else m,
        }
        if baseline is not None:
            row["baseline_label"], row["baseline"] = baseline
            row["ratio"] = value / baseline[1] if baseline[1] else None
        self.figures.append(row)

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "bench": self.bench,
            "mode": "quick" if self.quick else "full",
            "started": self.started,
            "seconds": time.time() - self.started,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "figures": self.figures,
            "data": self.data,
        }
        path.write_text(json.dumps(doc, indent=2, default=float))
