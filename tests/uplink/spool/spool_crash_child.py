"""Child process of the crash test: appends in a loop, printing each acknowledged seq.

Usage: python spool_crash_child.py <spool.db> <seed>. Prints "ready" once open, then after
every append that returned the highest sequence number it was given.
"""

from __future__ import annotations

import random
import sys
import time

from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool import SpoolConfig, SpoolCore


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    config = SpoolConfig(path=path, commit_interval_ms=1)
    spool = SpoolCore(config)
    spool.open()
    print("ready", flush=True)
    i = 0
    while True:
        n = rng.randint(1, 60)
        batch = []
        for _ in range(n):
            start = 1_700_000_000.0 + 60.0 * i
            s = Summary("crash", f"k{i % 7}", start, start + 60.0, {"count": i, "sum": 1.5 * i})
            batch.append(
                Envelope.wrap(
                    s, site="crash", seq=0, created_at=time.time(), version="t", config_hash="c"
                )
            )
            i += 1
        got = spool.append(batch)
        print(got.stop - 1, flush=True)


if __name__ == "__main__":
    main()
