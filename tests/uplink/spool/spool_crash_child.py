"""Child process of the crash tests: appends, printing each acknowledged seq, until killed.

Usage: ``python spool_crash_child.py <spool.db> <seed>`` appends batches in a loop and prints
"ready" once open, then after every append the highest sequence number it was given.
``python spool_crash_child.py <spool.db> <seed> <n>`` appends ``n`` records in batches, runs
``maintain()`` (the side ledger is then current), prints "synced" and waits to be killed.
``python spool_crash_child.py <spool.db> <seed> <n> ack`` acknowledges (deletes) every record
after appending them, before ``maintain()``: the table is empty when the child is killed.
"""

from __future__ import annotations

import random
import sys
import time

from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool import SpoolConfig, SyncSpool


def batch_of(n: int, first: int) -> list[Envelope]:
    out = []
    for i in range(first, first + n):
        start = 1_700_000_000.0 + 60.0 * i
        s = Summary("crash", f"k{i % 7}", start, start + 60.0, {"count": i, "sum": 1.5 * i})
        out.append(
            Envelope.wrap(
                s, site="crash", seq=0, created_at=time.time(), version="t", config_hash="c"
            )
        )
    return out


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    hold = int(sys.argv[3]) if len(sys.argv) > 3 else None
    ack = sys.argv[4:5] == ["ack"]
    rng = random.Random(seed)
    spool = SyncSpool(SpoolConfig(path=path, commit_interval_ms=1))
    spool.open()
    print("ready", flush=True)
    i = 0
    while hold is None or i < hold:
        n = rng.randint(1, 60) if hold is None else min(100, hold - i)
        got = spool.append(batch_of(n, i))
        i += n
        print(got.stop - 1, flush=True)
    if ack:
        spool.ack(r.id for r in spool.lease(10**7))
    spool.maintain()
    print("synced", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
