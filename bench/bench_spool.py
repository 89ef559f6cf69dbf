"""Benchmark of the durable spool: append, drain and restart, each against a baseline.

Run ``python bench/bench_spool.py`` (add ``--quick`` for small sizes). All in one run:

(a) raw limits: a bare SQLite WAL ``synchronous=FULL`` loop inserting rows prebuilt before
    the clock starts, in transactions of the spool's measured group size, on a connection
    opened exactly as the spool opens its own (same PRAGMAs): into a bare ``(id, blob)``
    table (reference), and into the spool's own schema, both with synthetic rows (random
    payloads of the spool's mean size) and with the spool's own rows (the same envelopes
    encoded beforehand), each inserted four ways: ``executemany``; 512 rows per INSERT (the
    spool's Python path); the same with bytes payloads; and the spool's compiled committer
    (``_txn.c``) on its own, one commit at a time. No encoding, no other threads, no state
    row (the compiled committer's COMMIT carries its one-row state update). The raw limit is
    the best round of the fastest of the eight spool-schema loops, the fastest being the one
    with the highest median round (best of N rounds against the spool's best of N: 5 in the
    full run, 3 with --quick; the fastest single round of all loops is printed too). Also an fsync-per-batch file append loop;
(b) durable appends through the spool (many concurrent callers, group commit), with commit
    latencies, as a ratio to the raw limit: ``append`` of envelopes built by the caller (also
    with ``compiled_commit = false``, groups written through the sqlite3 module), and
    ``append_summaries`` with the spool's :class:`SiteWrap` and with a plain wrap function;
(c) drain after an outage: N spooled summaries sent to a real mosquitto with QoS 1 by the
    sender, against a bare aiomqtt client publishing the same payloads;
(d) time to first send after a restart with a large backlog: open + first lease + first
    publish acknowledged.

Prints figures and ratios; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiomqtt

from edge_runtime.broker import MosquittoProcess
from edge_runtime.mqtt import MqttLink
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import SiteWrap, Spool, SpoolConfig, SpoolCore, Wrap
from edge_runtime.uplink.spool._db import (
    INSERT_SQL,
    ROW_WIDTH,
    GroupCommit,
    connect,
    insert_flat,
    read_state,
)
from edge_runtime.uplink.spool._encode import COMPILED, RowEncoder
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


@dataclass
class Sizes:
    rounds: int  # spool and raw loops alternately, best of each
    append: int
    callers: int
    batch: int
    drain: int
    backlog: int


FULL = Sizes(rounds=5, append=200_000, callers=8, batch=500, drain=100_000, backlog=1_000_000)
QUICK = Sizes(rounds=3, append=40_000, callers=8, batch=500, drain=20_000, backlog=100_000)


def make_envelopes(n: int, streams: int = 1000, created_at: float | None = None) -> list[Envelope]:
    now = time.time() if created_at is None else created_at
    out = []
    for i in range(n):
        start = 1_700_000_000.0 + 300.0 * (i // streams)
        s = Summary("counts", f"sensor-{i % streams:05d}", start, start + 300.0, STATS)
        out.append(
            Envelope.wrap(s, site="bench", seq=0, created_at=now, version="0.1", config_hash="c")
        )
    return out


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection set up as the spool's (same PRAGMAs), with the spool's tables."""
    conn = connect(path)
    read_state(conn)
    return conn


# -- (a) raw limits ---------------------------------------------------------------------------


def raw_sqlite_bare(path: Path, n: int, group: int, blob_size: int) -> float:
    """Rows/s inserting same-size blobs into a bare (id, blob) table, one transaction a group."""
    _fresh(path)
    conn = _connect(path)
    conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
    blob = os.urandom(blob_size)
    rows = [(blob,)] * group
    started = time.perf_counter()
    for _ in range(max(1, n // group)):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO r (b) VALUES (?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return max(1, n // group) * group / elapsed


def synthetic_rows(n: int, blob_size: int, streams: int = 1000) -> list[list[object]]:
    """Rows of the spool's schema and shape, one list per row: ids in sequence, ``streams``
    streams, a random 32-character envelope id and a random payload of ``blob_size`` bytes
    each (as bytearray, as the spool passes them), with its CRC."""
    now = time.time()
    rows: list[list[object]] = []
    for i in range(n):
        payload = bytearray(os.urandom(blob_size))
        start = 1_700_000_000.0 + 300.0 * (i // streams)
        rows.append(
            [
                (1 << 56) | (i + 1),
                f"counts/sensor-{i % streams:05d}",
                os.urandom(16).hex(),
                start,
                start + 300.0,
                now,
                zlib.crc32(payload),
                payload,
            ]
        )
    return rows


def spool_rows(envelopes: Sequence[Envelope]) -> list[list[object]]:
    """The rows the spool itself stores for ``envelopes`` (encoded by its RowEncoder)."""
    flat: list[object] = []
    RowEncoder().encode_rows(envelopes, None, None, 1, (flat, [0, 0, 0]))
    return [flat[i : i + ROW_WIDTH] for i in range(0, len(flat), ROW_WIDTH)]


RAW_MODES = ("executemany", "multi", "multi_bytes", "compiled")


def raw_sqlite_schema(path: Path, rows: list[list[object]], group: int, mode: str) -> float:
    """Rows/s inserting prebuilt ``rows`` into the spool's schema, one transaction per group
    of ``group`` rows, on a connection opened as the spool's: no encoding, no state row.

    ``mode``: ``executemany``; ``multi`` (512 rows per INSERT, as the spool's Python path);
    ``multi_bytes`` (the same with the payloads as bytes); ``compiled`` (the spool's compiled
    committer, ``_txn.c``, on its own: the same statements run by a native thread, the caller
    waiting for each commit).
    """
    _fresh(path)
    conn = _connect(path)
    groups: list[list[object]] = []
    for start in range(0, len(rows) - group + 1, group):
        flat: list[object] = []
        for row in rows[start : start + group]:
            flat += row if mode != "multi_bytes" else [*row[:7], bytes(cast(bytearray, row[7]))]
        groups.append(flat)
    tuples = [[tuple(g[i : i + ROW_WIDTH]) for i in range(0, len(g), ROW_WIDTH)] for g in groups]
    gc = GroupCommit.for_connection(conn, path) if mode == "compiled" else None
    if mode == "compiled" and gc is None:
        conn.close()
        return 0.0
    started = time.perf_counter()
    for k, flat in enumerate(groups):
        if gc is not None:
            gc.rows(flat)
            gc.commit(k + 1, (0, 0, 0), 0, k)
            done = gc.wait()
            if not done or done[0][1] is not None:
                raise RuntimeError(f"raw compiled commit failed: {done}")
            continue
        conn.execute("BEGIN")
        if mode == "executemany":
            conn.executemany(INSERT_SQL, tuples[k])
        else:
            insert_flat(conn, flat)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    if gc is not None:
        gc.close()
    conn.close()
    return len(groups) * group / elapsed


def raw_fsync_file(path: Path, n: int, group: int, blob_size: int) -> float:
    """Records/s appending group × blob bytes to a file and fsyncing after each group."""
    chunk = os.urandom(blob_size) * group
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    started = time.perf_counter()
    try:
        for _ in range(max(1, n // group)):
            os.write(fd, chunk)
            os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink(missing_ok=True)
    return max(1, n // group) * group / elapsed


# -- (b) durable appends through the spool ----------------------------------------------------


@dataclass
class AppendResult:
    rate: float
    site_wrap_rate: float
    wrap_rate: float
    python_commit_rate: float  # the same appends, groups written through the sqlite3 module
    mean_group: float
    payload_size: float
    commit_p50_ms: float
    commit_p99_ms: float
    append_p50_ms: float
    append_p99_ms: float
    encode_us: float
    write_us: float
    compiled_commit: bool


async def _append_run(
    path: Path, sizes: Sizes, envelopes: Sequence[Envelope], *, compiled_commit: bool = True
) -> AppendResult:
    _fresh(path)
    per_caller = len(envelopes) // sizes.callers
    config = SpoolConfig(path=str(path), max_bytes=1 << 40, compiled_commit=compiled_commit)
    async with Spool(config) as spool:

        async def caller(k: int) -> None:
            mine = envelopes[k * per_caller : (k + 1) * per_caller]
            for start in range(0, len(mine), sizes.batch):
                await spool.append(mine[start : start + sizes.batch])

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in range(sizes.callers):
                group.create_task(caller(k), name=f"bench-caller-{k}")
        elapsed = time.perf_counter() - started
        stats = spool.stats()
    return AppendResult(
        rate=per_caller * sizes.callers / elapsed,
        site_wrap_rate=0.0,
        wrap_rate=0.0,
        python_commit_rate=0.0,
        mean_group=stats.mean_commit_records,
        payload_size=stats.payload_bytes / max(1, stats.depth),
        commit_p50_ms=stats.commit_p50_ms or 0.0,
        commit_p99_ms=stats.commit_p99_ms or 0.0,
        append_p50_ms=stats.append_p50_ms or 0.0,
        append_p99_ms=stats.append_p99_ms or 0.0,
        encode_us=stats.extra["encode_us_per_record"],
        write_us=stats.extra["write_us_per_record"],
        compiled_commit=bool(stats.extra["compiled_commit"]),
    )


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


def site_wrap(now: float) -> SiteWrap:
    return SiteWrap(site="bench", created_at=now, version="0.1", config_hash="c")


def plain_wrap(now: float) -> Wrap:
    def wrap(s: Summary, seq: int) -> Envelope:
        return Envelope.wrap(
            s, site="bench", seq=seq, created_at=now, version="0.1", config_hash="c"
        )

    return wrap


async def _append_summaries_run(
    path: Path, sizes: Sizes, summaries: Sequence[Summary], wrap: Wrap
) -> float:
    _fresh(path)
    per_caller = len(summaries) // sizes.callers
    async with Spool(SpoolConfig(path=str(path), max_bytes=1 << 40)) as spool:

        async def caller(k: int) -> None:
            mine = summaries[k * per_caller : (k + 1) * per_caller]
            for start in range(0, len(mine), sizes.batch):
                await spool.append_summaries(mine[start : start + sizes.batch], wrap)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in range(sizes.callers):
                group.create_task(caller(k), name=f"bench-wrap-caller-{k}")
        elapsed = time.perf_counter() - started
    return per_caller * sizes.callers / elapsed


@dataclass
class Raw:
    bare: float = 0.0
    # rows/s of each round, per way of inserting
    synthetic: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in RAW_MODES})
    own: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in RAW_MODES})
    fsync: float = 0.0

    def _loops(self) -> list[list[float]]:
        return [*self.synthetic.values(), *self.own.values()]

    @property
    def limit(self) -> float:
        """The raw limit for the spool's rows: the best round of the fastest loop over the
        spool's schema, the fastest being the one with the highest median round. (The best of
        every round of all eight would pick the luckiest of 8 N samples on a noisy machine
        against the spool's N; this compares best of N with best of N.)"""
        fastest = max((r for r in self._loops() if r), key=statistics.median, default=[1.0])
        return max(fastest)

    @property
    def luckiest(self) -> float:
        """The fastest single round of any of the eight loops."""
        return max((max(r) for r in self._loops() if r), default=1.0)


async def bench_append(work: Path, sizes: Sizes, rounds: int) -> tuple[AppendResult, Raw, int]:
    """Spool and raw loops alternately, ``rounds`` times; the best round of each counts.

    The machine may be shared: interleaving and best-of keep the ratios honest.
    """
    envelopes = make_envelopes(sizes.append)
    summaries = make_summaries(sizes.append)
    own = spool_rows(envelopes)
    synthetic: list[list[object]] = []
    best: AppendResult | None = None
    raw = Raw()
    group = 0
    site_wrap_rate = wrap_rate = python_commit_rate = 0.0
    for _ in range(rounds):
        result = await _append_run(work / "append.db", sizes, envelopes)
        if best is None or result.rate > best.rate:
            best = result
        python = await _append_run(work / "append-py.db", sizes, envelopes, compiled_commit=False)
        python_commit_rate = max(python_commit_rate, python.rate)
        group = max(1, round(result.mean_group))
        blob = max(1, round(result.payload_size))
        if not synthetic:
            synthetic = synthetic_rows(sizes.append, blob)
        raw.bare = max(raw.bare, raw_sqlite_bare(work / "raw.db", sizes.append, group, blob))
        for mode in RAW_MODES:
            path = work / f"raw-{mode}.db"
            raw.synthetic[mode].append(raw_sqlite_schema(path, synthetic, group, mode))
            raw.own[mode].append(raw_sqlite_schema(path, own, group, mode))
        raw.fsync = max(raw.fsync, raw_fsync_file(work / "raw.bin", sizes.append, group, blob))
        now = time.time()
        site_wrap_rate = max(
            site_wrap_rate,
            await _append_summaries_run(work / "append-sw.db", sizes, summaries, site_wrap(now)),
        )
        wrap_rate = max(
            wrap_rate,
            await _append_summaries_run(work / "append-wrap.db", sizes, summaries, plain_wrap(now)),
        )
    assert best is not None
    best.site_wrap_rate, best.wrap_rate = site_wrap_rate, wrap_rate
    best.python_commit_rate = python_commit_rate
    return best, raw, group


# -- (c) drain to a real broker ---------------------------------------------------------------


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
    with SpoolCore(config) as core:  # spooled while the link was down
        for start in range(0, len(envelopes), 20_000):
            core.append(envelopes[start : start + 20_000])
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
    with SpoolCore(SpoolConfig(path=str(work / "drain-copy.db"), max_bytes=1 << 40)) as core:
        core.append(envelopes)
        messages: list[bytes] = []
        while batch := core.lease(sender_config.max_batch_records, sender_config.max_batch_bytes):
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


# -- (d) restart with a large backlog ---------------------------------------------------------


async def _first_send(config: SpoolConfig, link: MqttLink) -> tuple[float, float, float]:
    """Seconds to open, to the first lease, and to the first PUBACK."""
    started = time.perf_counter()
    spool = Spool(config)
    await spool.open()
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
    with SpoolCore(config) as core:
        futures = [core.submit_append(template) for _ in range(sizes.backlog // chunk)]
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    work = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
    print(
        f"bench_spool ({'quick' if args.quick else 'full'}), work dir {work}, "
        f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    try:
        appended, raw, group = await bench_append(work, sizes, rounds=sizes.rounds)
        blob = round(appended.payload_size)
        print(
            f"\n(a) raw limits: {sizes.append} rows of {blob} B, {group} rows per transaction, "
            f"the spool's PRAGMAs, rows built before the clock starts (best of {sizes.rounds}, "
            "interleaved "
            "with (b))"
        )
        _row("bare SQLite WAL sync=FULL, (id, blob) table, executemany", f"{raw.bare:,.0f} rows/s")
        labels = {
            "executemany": "executemany",
            "multi": "512 rows per INSERT",
            "multi_bytes": "512 rows per INSERT, payloads as bytes",
            "compiled": "compiled committer alone (_txn.c)",
        }
        for rows_name, rates in (("synthetic rows", raw.synthetic), ("the spool's rows", raw.own)):
            for mode in RAW_MODES:
                best = max(rates[mode], default=0.0)
                _row(
                    f"spool's schema, {rows_name}, {labels[mode]}",
                    f"{best:,.0f} rows/s" if best else "not built",
                    f"median {statistics.median(rates[mode]):,.0f}" if best else "",
                )
        _row(
            "raw limit: best round of the loop with the highest median",
            f"{raw.limit:,.0f} rows/s",
        )
        _row("fastest single round of any of the eight (reference)", f"{raw.luckiest:,.0f} rows/s")
        _row("file append + fsync per group (reference)", f"{raw.fsync:,.0f} rows/s")

        print(
            f"\n(b) durable append through the spool: {sizes.append} envelopes, "
            f"{sizes.callers} concurrent callers x {sizes.batch} per append "
            f"(best of {sizes.rounds})"
        )
        _row(
            "Spool.append (envelopes built by the caller)",
            f"{appended.rate:,.0f} /s",
            f"target >= 50,000/s: {'ok' if appended.rate >= 50_000 else 'MISSED'}",
        )
        _row("  ratio to the raw limit", f"{appended.rate / raw.limit:.2f} x", "target >= 0.8")
        _row("  ratio to the fastest single raw round", f"{appended.rate / raw.luckiest:.2f} x")
        _row(
            "  ratio to the spool's rows, compiled committer alone",
            f"{appended.rate / max(raw.own['compiled']):.2f} x"
            if any(raw.own["compiled"])
            else "-",
        )
        _row(
            "  ratio to the spool's rows, 512 rows per INSERT",
            f"{appended.rate / max(raw.own['multi']):.2f} x",
        )
        _row(
            "  rows built by",
            "compiled loop" if COMPILED else "Python loop",
            "edge_runtime/spool/_rows.c" if COMPILED else "(no C compiler at install)",
        )
        _row(
            "  groups written by",
            "compiled committer" if appended.compiled_commit else "sqlite3 module",
            "edge_runtime/spool/_txn.c, a native thread"
            if appended.compiled_commit
            else "in the writer thread",
        )
        _row(
            "  same, groups written through the sqlite3 module",
            f"{appended.python_commit_rate:,.0f} /s",
            f"ratio to the raw limit {appended.python_commit_rate / raw.limit:.2f} x "
            "(compiled_commit = false)",
        )
        write_rate = 1e6 / appended.write_us if appended.write_us else 0.0
        _row(
            "  time per record: encode (writer) / insert + commit",
            f"{appended.encode_us:.1f} / {appended.write_us:.1f} us",
        )
        _row(
            "  insert + commit alone (no WAL checkpoints), ratio to raw",
            f"{write_rate / raw.limit:.2f} x",
            f"{write_rate:,.0f} /s",
        )
        _row(
            "Spool.append_summaries, SiteWrap (encoded from the summary)",
            f"{appended.site_wrap_rate:,.0f} /s",
        )
        _row("  ratio to the raw limit", f"{appended.site_wrap_rate / raw.limit:.2f} x")
        _row(
            "Spool.append_summaries, a wrap function (Envelope.wrap each)",
            f"{appended.wrap_rate:,.0f} /s",
        )
        _row("  ratio to the raw limit", f"{appended.wrap_rate / raw.limit:.2f} x")
        _row("mean records per commit (group commit)", f"{appended.mean_group:,.0f}")
        _row(
            "commit (encode + transaction + fsync) p50 / p99",
            f"{appended.commit_p50_ms:.1f} / {appended.commit_p99_ms:.1f} ms",
        )
        _row(
            "append call to durable p50 / p99",
            f"{appended.append_p50_ms:.1f} / {appended.append_p99_ms:.1f} ms",
        )

        with MosquittoProcess() as broker:
            drain = await bench_drain(work, broker, sizes)
            print(f"\n(c) drain after an outage: {sizes.drain} summaries to mosquitto, QoS 1")
            _row(
                "sender, records acknowledged (PUBACK)",
                f"{drain['rate_puback']:,.0f} /s",
                f"target >= 20,000/s: {'ok' if drain['rate_puback'] >= 20_000 else 'MISSED'}",
            )
            _row("sender, records marked sent in the spool", f"{drain['rate_drained']:,.0f} /s")
            _row("bare aiomqtt QoS 1, same payloads, 64 in flight", f"{drain['bare_rate']:,.0f} /s")
            _row("  ratio sender / bare", f"{drain['rate_puback'] / drain['bare_rate']:.2f} x")
            _row(
                "messages, envelopes and bytes per message",
                f"{drain['messages']:.0f}",
                f"{drain['per_message']:.0f} env, {drain['bytes_per_message'] / 1024:.0f} KiB",
            )

            restart = await bench_restart(work, broker, sizes)
            print(
                f"\n(d) restart with a {sizes.backlog:,} summary backlog "
                f"({restart['size_mb']:.0f} MB file, built at {restart['build_rate']:,.0f}/s)"
            )
            _row("open (clean close before)", f"{restart['open_s'] * 1000:.0f} ms")
            _row("open + first lease", f"{restart['lease_s'] * 1000:.0f} ms")
            _row(
                "open + first lease + first publish acknowledged",
                f"{restart['first_s'] * 1000:.0f} ms",
                f"target <= 1 s: {'ok' if restart['first_s'] <= 1.0 else 'MISSED'}",
            )
            _row(
                "same with quick_check on open (as after a crash)",
                f"{restart['checked_first_s'] * 1000:.0f} ms",
                f"open {restart['checked_open_s'] * 1000:.0f} ms",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
