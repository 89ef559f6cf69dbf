"""Benchmark of the durable spool: append, drain and restart, each beside a baseline.

Run ``python bench/bench_spool.py`` (add ``--quick`` for small sizes). All in one run:

(a) durable append: summaries/s through the spool (many concurrent callers, group commit, each
    append answered once its group is committed and fsynced), beside the bare SQLite loop
    measured in the same run: rows the spool itself would store (encoded before the clock
    starts) inserted with ``executemany`` into the spool's schema, in transactions of the
    spool's measured group size (``BEGIN IMMEDIATE`` ... ``COMMIT``), on a connection opened as
    the spool opens its own (WAL, ``synchronous=FULL``). No encoding, no threads, no state row:
    the ratio is what the spool's work around SQLite costs. Rounds alternate (best of N);
(b) drain after an outage: N spooled summaries sent to a real mosquitto with QoS 1 by the
    sender, beside a bare aiomqtt client publishing the same payloads;
(c) time to first send after a restart with a large backlog (1,000,000 summaries; 100,000
    with --quick): open + first lease + first publish acknowledged.

Prints figures and ratios; it is a measurement, not a test. The target figures printed beside
them (20,000 summaries/s durable, 1 s to the first send) are this project's, not SQLite's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import Results
from edge_runtime.broker import MosquittoProcess
from edge_runtime.mqtt import MqttLink
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import SiteWrap, Spool, SpoolConfig, SyncSpool, Wrap
from edge_runtime.uplink.spool._db import INSERT_SQL, connect, read_state
from edge_runtime.uplink.spool._encode import Row, encode_rows
from edge_runtime.uplink.spool.records import pack_message

STATS = {
    "count": 12,
    "missing": 0,
    "sum": 123.4,
    "min": 1.5,
    "max": 20.25,
    "mean": 10.28,
    "stddev": 3.2,
    "p50": 10.0,
    "p95": 18.5,
    "p99": 19.75,
}
TARGET_APPEND = 20_000.0
TARGET_FIRST_SEND_S = 1.0


@dataclass
class Sizes:
    rounds: int  # spool and bare loops alternately, best of each
    append: int
    callers: int
    batch: int
    drain: int
    backlog: int


FULL = Sizes(rounds=5, append=200_000, callers=8, batch=500, drain=100_000, backlog=1_000_000)
QUICK = Sizes(rounds=3, append=40_000, callers=8, batch=500, drain=20_000, backlog=100_000)


def make_envelopes(n: int, streams: int = 1000, created_at: float | None = None) -> list[Envelope]:
    now = time.time() if created_at is None else created_at
    return [
        Envelope.wrap(s, site="bench", seq=0, created_at=now, version="0.1", config_hash="c")
        for s in make_summaries(n, streams)
    ]


def make_summaries(n: int, streams: int = 1000) -> list[Summary]:
    return [
        Summary(
            "counts",
            f"sensor-{i % streams:05d}",
            1.7e9 + 300.0 * (i // streams),
            1.7e9 + 300.0 * (i // streams + 1),
            STATS,
        )
        for i in range(n)
    ]


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".ledger"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- (a) durable append -----------------------------------------------------------------------


def bare_sqlite(path: Path, rows: list[Row], group: int) -> float:
    """Rows/s: the bare loop (see the module doc)."""
    _fresh(path)
    conn = connect(path)
    read_state(conn)
    groups = [rows[i : i + group] for i in range(0, len(rows) - group + 1, group)]
    started = time.perf_counter()
    for chunk in groups:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_SQL, chunk)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(groups) * group / elapsed


@dataclass
class SpoolRun:
    rate: float
    mean_group: float
    commit_p50_ms: float
    commit_p99_ms: float
    append_p50_ms: float
    append_p99_ms: float
    encode_us: float
    write_us: float


Append = Callable[[Spool, Sequence[Any]], Awaitable[range]]


def by_envelope(spool: Spool, part: Sequence[Envelope]) -> Awaitable[range]:
    return spool.append(part)


def by_summary(wrap: Wrap) -> Append:
    def append(spool: Spool, part: Sequence[Summary]) -> Awaitable[range]:
        return spool.append_summaries(part, wrap)

    return append


async def spool_append(path: Path, sizes: Sizes, items: Sequence[Any], append: Append) -> SpoolRun:
    """Records/s appended by ``sizes.callers`` concurrent callers, ``sizes.batch`` per call."""
    _fresh(path)
    per_caller = len(items) // sizes.callers
    async with Spool(SpoolConfig(path=str(path), max_bytes=1 << 40)) as spool:

        async def caller(k: int) -> None:
            mine = items[k * per_caller : (k + 1) * per_caller]
            for start in range(0, len(mine), sizes.batch):
                await append(spool, mine[start : start + sizes.batch])

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in range(sizes.callers):
                group.create_task(caller(k), name=f"bench-caller-{k}")
        elapsed = time.perf_counter() - started
        stats = spool.stats()
    return SpoolRun(
        rate=per_caller * sizes.callers / elapsed,
        mean_group=stats.mean_commit_records,
        commit_p50_ms=stats.commit_p50_ms or 0.0,
        commit_p99_ms=stats.commit_p99_ms or 0.0,
        append_p50_ms=stats.append_p50_ms or 0.0,
        append_p99_ms=stats.append_p99_ms or 0.0,
        encode_us=stats.extra["encode_us_per_record"],
        write_us=stats.extra["write_us_per_record"],
    )


def site_wrap(now: float) -> SiteWrap:
    return SiteWrap(site="bench", created_at=now, version="0.1", config_hash="c")


def plain_wrap(now: float) -> Wrap:
    def wrap(s: Summary, seq: int) -> Envelope:
        return Envelope.wrap(
            s, site="bench", seq=seq, created_at=now, version="0.1", config_hash="c"
        )

    return wrap


@dataclass
class AppendResult:
    summaries: SpoolRun  # append_summaries with the spool's SiteWrap: what the runtime does
    envelopes: float  # append of envelopes built by the caller
    wrap_fn: float  # append_summaries with a plain wrap function
    bare: float  # the bare SQLite loop
    group: int


async def bench_append(work: Path, sizes: Sizes) -> AppendResult:
    """Spool runs and the bare loop alternately, ``sizes.rounds`` times; best round of each.

    The machine may be shared: interleaving and best-of keep the ratios honest.
    """
    summaries = make_summaries(sizes.append)
    envelopes = make_envelopes(sizes.append)
    rows = encode_rows(envelopes, None, None, 1).rows  # the spool's own rows
    best: SpoolRun | None = None
    bare = envelopes_rate = wrap_rate = 0.0
    group = 1
    for _ in range(sizes.rounds):
        wrap = by_summary(site_wrap(time.time()))
        run = await spool_append(work / "append.db", sizes, summaries, wrap)
        if best is None or run.rate > best.rate:
            best = run
        group = max(1, round(best.mean_group))  # the bare loop commits groups of the spool's
        bare = max(bare, bare_sqlite(work / "bare.db", rows, group))
        by_env = await spool_append(work / "env.db", sizes, envelopes, by_envelope)
        envelopes_rate = max(envelopes_rate, by_env.rate)
        wrap = by_summary(plain_wrap(time.time()))
        wrap_rate = max(
            wrap_rate, (await spool_append(work / "wrap.db", sizes, summaries, wrap)).rate
        )
    assert best is not None
    return AppendResult(best, envelopes_rate, wrap_rate, bare, group)


# -- (b) drain to a real broker ---------------------------------------------------------------


class Bare:
    """A bare aiomqtt client: the baseline publisher (no spool, no sender)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def publish_all(self, topic: str, payloads: Sequence[bytes], in_flight: int) -> float:
        slots = asyncio.Semaphore(in_flight)

        async def one(payload: bytes) -> None:
            try:
                await self.client.publish(topic, payload, qos=1, timeout=60)
            finally:
                slots.release()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for payload in payloads:
                await slots.acquire()
                group.create_task(one(payload), name="bare-publish")
        return time.perf_counter() - started


def _link(port: int, name: str) -> MqttLink:
    config = BrokerConfig(port=port, protocol="3.1.1", clean_start=True)
    return MqttLink(config, client_id=f"bench-{name}-{os.getpid()}", role="core")


async def bench_drain(work: Path, broker: MosquittoProcess, sizes: Sizes) -> dict[str, float]:
    path = work / "drain.db"
    _fresh(path)
    config = SpoolConfig(path=str(path), max_bytes=1 << 40)
    envelopes = make_envelopes(sizes.drain)
    with SyncSpool(config) as sync:  # spooled while the link was down
        for start in range(0, len(envelopes), 20_000):
            sync.append(envelopes[start : start + 20_000])
    sender_config = SenderConfig(topic="bench/uplink", max_in_flight=64)
    async with Spool(config) as spool, _link(broker.port, "sender") as link:
        await link.wait_connected()
        started = time.perf_counter()
        async with Sender(spool, link, sender_config) as sender:
            await sender.wait_sent(sizes.drain)
            sent = time.perf_counter() - started
            stats = sender.stats()
        while spool.stats().depth:
            await asyncio.sleep(0.001)
        drained = time.perf_counter() - started
    # baseline: the same payloads (same messages) through a bare aiomqtt client
    with SyncSpool(SpoolConfig(path=str(work / "drain-copy.db"), max_bytes=1 << 40)) as sync:
        sync.append(envelopes)
        messages: list[bytes] = []
        while batch := sync.lease(sender_config.max_batch_records, sender_config.max_batch_bytes):
            messages.append(pack_message([r.wire_payload() for r in batch]))
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=1000) as client:
        bare_s = await Bare(client).publish_all("bench/bare", messages, 64)
    return {
        "rate_puback": sizes.drain / sent,
        "rate_drained": sizes.drain / drained,
        "bare_rate": sizes.drain / bare_s,
        "messages": stats.messages_sent,
        "per_message": sizes.drain / max(1, stats.messages_sent),
        "bytes_per_message": stats.bytes_sent / max(1, stats.messages_sent),
    }


# -- (c) restart with a large backlog ---------------------------------------------------------


async def _first_send(config: SpoolConfig, link: MqttLink) -> tuple[float, float, float]:
    """Seconds to open, to the first lease, and to the first PUBACK."""
    started = time.perf_counter()
    spool = Spool(config)
    await spool.start()
    opened = time.perf_counter() - started
    records = await spool.lease(2000, 256 * 1024, live_window_s=60.0)
    leased = time.perf_counter() - started
    await link.publish("bench/restart", pack_message([r.wire_payload() for r in records]), 1)
    await spool.ack([r.id for r in records])
    first = time.perf_counter() - started
    await spool.close()
    return opened, leased, first


async def bench_restart(work: Path, broker: MosquittoProcess, sizes: Sizes) -> dict[str, float]:
    path = work / "restart.db"
    _fresh(path)
    config = SpoolConfig(path=str(path), max_bytes=1 << 40)
    chunk = 20_000
    template = make_envelopes(chunk)
    started = time.perf_counter()
    with SyncSpool(config) as sync:
        futures = [sync.submit_append(template) for _ in range(sizes.backlog // chunk)]
        for future in futures:
            future.result()
    build_s = time.perf_counter() - started
    size_mb = path.stat().st_size / 1e6
    async with _link(broker.port, "restart") as link:
        await link.wait_connected()
        opened, leased, first = await _first_send(config, link)
        checked = await _first_send(config.model_copy(update={"check_on_open": "always"}), link)
    return {
        "build_rate": sizes.backlog / build_s,
        "size_mb": size_mb,
        "open_s": opened,
        "lease_s": leased,
        "first_s": first,
        "checked_open_s": checked[0],
        "checked_first_s": checked[2],
    }


# -- report -----------------------------------------------------------------------------------


def _row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<58} {value:>16}  {note}")


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report_append(sizes: Sizes, result: AppendResult) -> None:
    run = result.summaries
    print(
        f"\n(a) durable append: {sizes.append:,} summaries, {sizes.callers} concurrent callers "
        f"x {sizes.batch} per append, fsync'd group commit (best of {sizes.rounds}, rounds "
        "interleaved with the bare loop)"
    )
    _row(
        "Spool.append_summaries, SiteWrap (what the site runs)",
        f"{run.rate:,.0f} /s",
        f"target >= {TARGET_APPEND:,.0f}/s: {_verdict(run.rate >= TARGET_APPEND)}",
    )
    _row(
        f"bare SQLite loop, {result.group} rows per commit (same run)",
        f"{result.bare:,.0f} /s",
        "executemany of prebuilt rows, same schema and PRAGMAs",
    )
    _row("  ratio spool / bare SQLite loop", f"{run.rate / result.bare:.2f} x")
    _row("Spool.append, envelopes built by the caller", f"{result.envelopes:,.0f} /s")
    _row("  ratio spool / bare SQLite loop", f"{result.envelopes / result.bare:.2f} x")
    _row("Spool.append_summaries, a wrap function (Envelope.wrap)", f"{result.wrap_fn:,.0f} /s")
    _row("  ratio spool / bare SQLite loop", f"{result.wrap_fn / result.bare:.2f} x")
    _row("mean records per commit (group commit)", f"{run.mean_group:,.0f}")
    _row(
        "writer time per record: encode / insert + commit",
        f"{run.encode_us:.1f} / {run.write_us:.1f} us",
    )
    _row(
        "commit (encode + transaction + fsync) p50 / p99",
        f"{run.commit_p50_ms:.1f} / {run.commit_p99_ms:.1f} ms",
    )
    _row(
        "append call to durable p50 / p99",
        f"{run.append_p50_ms:.1f} / {run.append_p99_ms:.1f} ms",
    )


def report_drain(sizes: Sizes, drain: dict[str, float]) -> None:
    print(f"\n(b) drain after an outage: {sizes.drain:,} summaries to mosquitto, QoS 1")
    _row("sender, records acknowledged (PUBACK)", f"{drain['rate_puback']:,.0f} /s")
    _row("sender, records marked sent in the spool", f"{drain['rate_drained']:,.0f} /s")
    _row("bare aiomqtt QoS 1, same payloads, 64 in flight", f"{drain['bare_rate']:,.0f} /s")
    _row("  ratio sender / bare", f"{drain['rate_puback'] / drain['bare_rate']:.2f} x")
    _row(
        "messages, envelopes and bytes per message",
        f"{drain['messages']:.0f}",
        f"{drain['per_message']:.0f} env, {drain['bytes_per_message'] / 1024:.0f} KiB",
    )


def report_restart(sizes: Sizes, restart: dict[str, float]) -> None:
    print(
        f"\n(c) restart with a {sizes.backlog:,} summary backlog "
        f"({restart['size_mb']:.0f} MB file, built at {restart['build_rate']:,.0f}/s)"
    )
    _row("open (clean close before)", f"{restart['open_s'] * 1000:.0f} ms")
    _row("open + first lease", f"{restart['lease_s'] * 1000:.0f} ms")
    first = restart["first_s"]
    _row(
        "open + first lease + first publish acknowledged",
        f"{first * 1000:.0f} ms",
        f"target <= {TARGET_FIRST_SEND_S:.0f} s: {_verdict(first <= TARGET_FIRST_SEND_S)}",
    )
    _row(
        "same with quick_check on open (as after a crash)",
        f"{restart['checked_first_s'] * 1000:.0f} ms",
        f"open {restart['checked_open_s'] * 1000:.0f} ms",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the figures here (for bench/run)")
    args = parser.parse_args()
    results = Results("bench_spool", quick=args.quick)
    sizes = QUICK if args.quick else FULL
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    work = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
    print(
        f"bench_spool ({'quick' if args.quick else 'full'}), work dir {work}, "
        f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    try:
        with results.phase("append"):
            append = await bench_append(work, sizes)
        report_append(sizes, append)
        with MosquittoProcess() as broker:
            with results.phase("drain"):
                drain = await bench_drain(work, broker, sizes)
            report_drain(sizes, drain)
            with results.phase("restart"):
                restart = await bench_restart(work, broker, sizes)
            report_restart(sizes, restart)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run = append.summaries
    results.figure(
        "append",
        "(a) spool durable append (summaries/s)",
        run.rate,
        "summaries/s",
        baseline=("bare SQLite loop, same group size", append.bare),
    )
    results.figure(
        "drain",
        "(b) drain to mosquitto, QoS 1 (records/s)",
        drain["rate_puback"],
        "records/s",
        baseline=("bare aiomqtt QoS 1, same payloads", drain["bare_rate"]),
    )
    results.figure(
        "restart",
        f"(c) first send after restart, {sizes.backlog:,} backlog (s)",
        restart["first_s"],
        "s",
        baseline=("target", TARGET_FIRST_SEND_S),
        better="lower",
    )
    results.data["latency_ms"] = {
        "spool commit": {"p50": run.commit_p50_ms, "p99": run.commit_p99_ms},
        "spool append to durable": {"p50": run.append_p50_ms, "p99": run.append_p99_ms},
    }
    results.write(args.json)


if __name__ == "__main__":
    asyncio.run(main())
