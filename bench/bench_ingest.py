"""Issue 2 benchmark: ingest and aggregation throughput, against baselines measured in this run.

    python bench/bench_ingest.py [--quick]

(a) the bare aiomqtt receive loop: the client's own ceiling on this machine;
(b) the runtime end to end: messages in to summaries out (QoS 0, one reading per JSON message);
    both drain the same backlog queued at the broker, so the publisher is not on the CPU while
    they are timed;
(c) b / a;
(d) readings/s through decode + windowed aggregation with batched SenML payloads (in process),
    against a straightforward per-reading Python loop doing the same stats (median of three runs,
    as for a and b);
(e) peak RSS of a runtime process under a 10x overload (a backlog ten times its per-second rate
    released at once), against its RSS when idle;
(f) the site ingest on each MQTT transport (BrokerConfig.transport "aiomqtt", then "gmqtt", in
    turn, in this run): messages/s and the consumer's CPU-s per 100k messages from the
    runtime's start until the whole backlog is ingested (received, queued, decoded,
    aggregated), and gmqtt's figures over aiomqtt's;
(g) the cost of checkpoints: (b) with ``[checkpoint] enabled = true, interval_s = 1`` against
    (b) with checkpoints off, alternated in this run: end-to-end msg/s and CPU-s per 100k
    messages, and on/off (target: within 10%). The input is QoS 0, as in (b), so this is the
    cost of the snapshots, their durable writes and the bookkeeping per batch; (a) to (f) run
    with checkpoints off, as before they existed. ``--checkpoints-only`` runs (g) alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiomqtt
import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import senml_pack, start_publisher
from bench._results import Results
from edge_runtime.broker import MosquittoProcess
from edge_runtime.clock import SystemClock
from edge_runtime.config import parse_config
from edge_runtime.decode import DecodeSpec, ReadingDecoder
from edge_runtime.pipelines import PipelineContext, RawMessage
from edge_runtime.runtime import SiteRuntime
from edge_runtime.uplink import decode_envelopes
from edge_runtime_pipelines.windows import WindowConfig, WindowPipeline


def cpu() -> float:
    return time.process_time()


async def preload(port: int, client_id: str, topic_filter: str, topic_fmt: str, n: int) -> None:
    """Queue ``n`` messages at the broker for an offline persistent session ``client_id``.

    Measuring a receiver on a backlog keeps the publisher off the CPU while it is timed, so
    the figure is the receiver's own ceiling. The last message is a sentinel far ahead in
    event time (it closes every window of the runtime's pipeline).
    """
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(topic_filter, qos=0)
    proc, go = start_publisher(port, topic_fmt, n)
    go.set()
    proc.join()
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic_fmt.format(key="sentinel"), SENTINEL, qos=1)


SENTINEL = b'{"value": 0, "ts": 1710000000}'


async def bare_aiomqtt(port: int, n: int) -> tuple[float, float]:
    """Messages/s and CPU-s per 100k of a bare aiomqtt receive loop draining a backlog."""
    await preload(port, "bench-bare", "bench/bare/#", "bench/bare/{key}", n)
    t0 = time.perf_counter()
    c0 = cpu()
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-bare", clean_session=False
    ) as client:
        count = 0
        async for message in client.messages:
            del message
            count += 1
            if count == n + 1:
                break
        elapsed = time.perf_counter() - t0
        used = cpu() - c0
    return n / elapsed, used / n * 100_000


SITE = """
site_id = "bench"
data_dir = "{data}"
[site_broker]
port = {port}
client_id = "bench-runtime-{tag}"
clean_start = false
transport = "{transport}"
[uplink.broker]
port = {port}
[uplink]
topic = "edge/bench/summaries"
[checkpoint]
enabled = {checkpoint}
interval_s = 1.0
[ingest]
qos = 0
batch_max = 4096
batch_wait_ms = 2
queue_size = {queue}
overflow = "{overflow}"
[ops]
http_enabled = {http}
http_port = 0
log_format = "text"
log_level = "WARNING"
[[pipelines]]
type = "windows"
name = "bench"
topics = ["bench/{tag}/+"]
decode = {{ format = "json", key = "topic:2", value = "field:value", time = "field:ts" }}
window = {{ kind = "tumbling", size_s = 10, allowed_lateness_s = 0 }}
"""


async def runtime_end_to_end(
    port: int, n: int, data: Path, *, checkpoint: bool = False
) -> tuple[float, float, int]:
    """Messages/s from the runtime's start to the last summary on the core, and CPU-s/100k,
    draining the same kind of backlog as the bare loop."""
    await preload(port, "bench-runtime-e2e", "bench/e2e/+", "bench/e2e/{key}", n)
    loaded = parse_config(
        SITE.format(
            data=data,
            port=port,
            tag="e2e",
            queue=100_000,
            overflow="drop_oldest",
            http="false",
            transport="aiomqtt",
            checkpoint=str(checkpoint).lower(),
        )
    )
    # event times are 1 ms apart, so n messages span n/10_000 windows of 10 s per key
    expected_windows = len({(i % 16, int((1.7e9 + i * 0.001) // 10)) for i in range(n)})
    got = 0
    done = asyncio.Event()

    async def collect(ready: asyncio.Event) -> None:
        nonlocal got
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe("edge/bench/#", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got += sum(1 for e in decode_envelopes(message.payload) if e.key != "sentinel")
                if got >= expected_windows:
                    done.set()

    ready = asyncio.Event()
    collector = asyncio.create_task(collect(ready))
    await ready.wait()
    t0 = time.perf_counter()
    c0 = cpu()
    runtime = SiteRuntime(loaded)
    site = asyncio.create_task(runtime.run())
    while runtime.stats.messages_in < n:
        await asyncio.sleep(0.005)
    ingested = time.perf_counter() - t0
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t0
    used = cpu() - c0
    print(f"    runtime: {n} messages in after {ingested:.2f}s, last summary out at {elapsed:.2f}s")
    runtime.stop()
    await site
    collector.cancel()
    return n / elapsed, used / n * 100_000, got


async def site_ingest(port: int, n: int, data: Path, transport: str) -> tuple[float, float]:
    """Messages/s and CPU-s/100k of the site ingest on one transport: from the runtime's start
    until every message of a backlog like (b)'s has gone through the pipelines. Only the
    runtime runs in this process while it is timed (no collector), so the CPU is the
    consumer's."""
    tag = f"ingest-{transport}"
    # each section's session has topics of its own: a persistent session of another section
    # (queue_qos0_messages) would otherwise queue this backlog too, and deliver it all at its
    # next connection
    await preload(port, f"bench-runtime-{tag}", f"bench/{tag}/+", f"bench/{tag}/{{key}}", n)
    loaded = parse_config(
        SITE.format(
            data=data,
            port=port,
            tag=tag,
            queue=n + 1_000,  # nothing is dropped: every message is ingested
            overflow="drop_oldest",
            http="false",
            transport=transport,
            checkpoint="false",
        )
    )
    t0 = time.perf_counter()
    c0 = cpu()
    runtime = SiteRuntime(loaded)
    site = asyncio.create_task(runtime.run())
    while runtime.stats.messages_in < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    used = cpu() - c0
    runtime.stop()
    await site
    return n / elapsed, used / n * 100_000


def hot_loop(packs: int, per_pack: int) -> tuple[float, float, float, float]:
    """Readings/s: decode + aggregate SenML packs, in process; the aggregation stage alone on
    the decoded batches; and a per-reading baseline."""
    t0 = 1.7e9
    messages = [
        RawMessage(
            "gw/x/senml", senml_pack(f"dev{i % 32}/", t0 + i * 0.5, per_pack, i), 0, False, t0
        )
        for i in range(packs)
    ]
    spec = DecodeSpec(format="senml", key="senml")
    config = WindowConfig.model_validate(
        {
            "type": "windows",
            "name": "hot",
            "topics": ["gw/#"],
            "decode": spec.model_dump(),
            "window": {"kind": "tumbling", "size_s": 60, "allowed_lateness_s": 5},
        }
    )
    decoder = ReadingDecoder(spec)
    pipeline = WindowPipeline(
        config, PipelineContext(site_id="b", pipeline="hot", clock=SystemClock())
    )
    errors: Counter[str] = Counter()
    batch_size = 16
    total = 0
    start = time.perf_counter()
    for i in range(0, len(messages), batch_size):
        batch = decoder.decode(messages[i : i + batch_size], errors)
        total += len(batch)
        pipeline.process(batch)
    pipeline.flush()
    rate = total / (time.perf_counter() - start)
    assert not errors, errors

    decoded = [
        decoder.decode(messages[i : i + batch_size], errors)
        for i in range(0, len(messages), batch_size)
    ]
    pipeline = WindowPipeline(
        config, PipelineContext(site_id="b", pipeline="hot2", clock=SystemClock())
    )
    start = time.perf_counter()
    for batch in decoded:
        pipeline.process(batch)
    pipeline.flush()
    aggregate_only = total / (time.perf_counter() - start)

    # Baseline: the loop a user writes first: orjson per pack, dict of lists per window, stats
    # with the statistics module at close.
    import orjson  # noqa: PLC0415

    sample = messages[: max(1, len(messages) // 10)]
    start = time.perf_counter()
    windows: dict[tuple[str, float], list[float]] = defaultdict(list)
    count = 0
    for msg in sample:
        base_name, base_time = "", 0.0
        for rec in orjson.loads(msg.payload):
            base_name = rec.get("bn", base_name)
            base_time = rec.get("bt", base_time)
            t = base_time + rec.get("t", 0.0)
            windows[(base_name + rec["n"], t // 60 * 60)].append(rec["v"])
            count += 1
    for values in windows.values():
        _ = (
            len(values),
            sum(values),
            min(values),
            max(values),
            statistics.fmean(values),
            statistics.pstdev(values),
            np.percentile(values, [50, 95, 99]),
        )
    naive = count / (time.perf_counter() - start)
    return rate, naive, total, aggregate_only


def overload_rss(port: int, rate_per_s: float, data: Path) -> tuple[int, int, int]:
    """Start a runtime process, measure idle RSS, release a 10x backlog, return peak RSS (kB)."""
    n = int(rate_per_s * 10)
    cfg = data / "overload.toml"
    cfg.write_text(
        SITE.format(
            data=data,
            port=port,
            tag="overload",
            queue=50_000,
            overflow="drop_oldest",
            http="true",
            transport="aiomqtt",
            checkpoint="false",
        )
        .replace("clean_start = true", "clean_start = false")
        .replace("[ingest]\nqos = 0", "[ingest]\nqos = 1")
    )
    runtime = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3.0)
    idle = _rss(runtime.pid, "VmRSS")
    runtime.send_signal(15)
    runtime.wait(30)
    # the session persists: publish the backlog (QoS 1) while the runtime is away
    proc, go = start_publisher(port, "bench/overload/{key}", n, qos=1)
    go.set()
    proc.join()
    runtime = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    deadline = time.time() + 60
    last_change = time.time()
    while time.time() < deadline:
        time.sleep(0.2)
        hwm = _rss(runtime.pid, "VmHWM")
        if hwm > peak:
            peak, last_change = hwm, time.time()
        elif time.time() - last_change > 5:
            break
    runtime.send_signal(15)
    runtime.wait(30)
    return idle, peak, n


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def checkpoint_cost(results: Results, port: int, n: int, data: Path, runs: int) -> None:
    """(g): (b) with checkpoints every 1 s against (b) without, in turn, medians of ``runs``."""
    rows: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    with results.phase("g"):
        for i in range(runs):  # in turn, so that both see the same machine
            for on, got in rows.items():
                got.append(
                    uvloop.run(runtime_end_to_end(port, n, data / f"ckpt-{on}-{i}", checkpoint=on))
                )
    (off_rate, off_cpu), (on_rate, on_cpu) = (
        (statistics.median(r for r, _, _ in rows[on]), statistics.median(c for _, c, _ in rows[on]))
        for on in (False, True)
    )
    print(
        f"(g) checkpoints every 1 s vs off      off {off_rate:>9,.0f} msg/s  {off_cpu:.2f} "
        f"CPU-s/100k | on {on_rate:>9,.0f} msg/s  {on_cpu:.2f} CPU-s/100k | on/off: rate "
        f"{on_rate / off_rate:.3f}x, CPU per message {on_cpu / off_cpu:.3f}x (target: within 10%; "
        f"median of {runs}, end to end as (b), QoS 0)"
    )
    results.figure(
        "g",
        "(g) runtime end to end with checkpoints every 1 s (msg/s)",
        on_rate,
        "msg/s",
        baseline=("checkpoints off", off_rate),
    )
    results.figure(
        "g",
        "(g) runtime end to end with checkpoints every 1 s (CPU-s per 100k msgs)",
        on_cpu,
        "CPU-s/100k",
        baseline=("checkpoints off", off_cpu),
        better="lower",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--messages", type=int, help="messages for (a) and (b)")
    parser.add_argument("--json", type=Path, help="also write the figures here (for bench/run)")
    parser.add_argument(
        "--checkpoints-only", action="store_true", help="run (g) alone: checkpoints on vs off"
    )
    args = parser.parse_args()
    results = Results("bench_ingest", quick=args.quick)
    n = args.messages or (50_000 if args.quick else 200_000)
    print(
        f"edge-runtime ingest bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"{n} one-reading JSON messages (QoS 0, MQTT 3.1.1) queued at mosquitto for an offline "
        "persistent session, then drained"
    )
    with (
        MosquittoProcess(extra_conf="queue_qos0_messages true") as broker,
        tempfile.TemporaryDirectory() as tmp,
    ):
        data = Path(tmp)
        runs = 1 if args.quick else 3
        if args.checkpoints_only:
            checkpoint_cost(results, broker.port, n, data, max(runs, 3))
            results.write(args.json)
            return
        with results.phase("ab"):
            bare = [uvloop.run(bare_aiomqtt(broker.port, n)) for _ in range(runs)]
            e2e = [
                uvloop.run(runtime_end_to_end(broker.port, n, data / f"e2e{i}"))
                for i in range(runs)
            ]
        a_rate = statistics.median(r for r, _ in bare)
        a_cpu = statistics.median(c for _, c in bare)
        b_rate = statistics.median(r for r, _, _ in e2e)
        b_cpu = statistics.median(c for _, c, _ in e2e)
        print(
            f"(a) bare aiomqtt receive loop        {a_rate:>12,.0f} msg/s   {a_cpu:.2f} CPU-s/100k msgs"
        )
        print(
            f"(b) runtime end to end (to summaries) {b_rate:>11,.0f} msg/s   {b_cpu:.2f} CPU-s/100k msgs "
            f"(incl. uplink + collector), {e2e[0][2]} summaries"
        )
        print(
            f"(c) b/a                               {b_rate / a_rate:>11.2f}      (target >= 0.90)"
        )
        results.figure(
            "ab",
            "(b) runtime end to end on aiomqtt, JSON backlog (msg/s)",
            b_rate,
            "msg/s",
            baseline=("(a) bare aiomqtt receive loop", a_rate),
        )
        packs = 400 if args.quick else 2000
        with results.phase("d"):
            hot = [hot_loop(packs, 500) for _ in range(runs)]
        d_rate = statistics.median(h[0] for h in hot)
        naive = statistics.median(h[1] for h in hot)
        total = hot[0][2]
        agg = statistics.median(h[3] for h in hot)
        print(
            f"(d) decode+aggregate, SenML x500      {d_rate:>11,.0f} readings/s ({total:,} readings; "
            f"per-reading Python loop {naive:,.0f}/s, ratio {d_rate / naive:.1f}x; target >= 1,000,000)"
        )
        print(
            f"    aggregation stage alone             {agg:>11,.0f} readings/s (same batches, decoded beforehand)"
        )
        results.figure(
            "d",
            "(d) SenML x500 decode + windows (readings/s)",
            d_rate,
            "readings/s",
            baseline=("per-reading Python loop", naive),
        )
        with results.phase("e"):
            idle, peak, backlog = overload_rss(broker.port, b_rate, data)
        results.figure(
            "e",
            "(e) peak RSS under a 10x overload (MiB)",
            peak / 1024,
            "MiB",
            baseline=("idle RSS", idle / 1024),
            better="lower",
        )
        print(
            f"(e) peak RSS under 10x overload       {peak / 1024:>11.1f} MiB  (idle {idle / 1024:.1f} MiB, "
            f"ratio {peak / max(idle, 1):.2f}x; backlog {backlog:,} msgs released at once, queue 50,000 drop_oldest)"
        )
        ingest: dict[str, list[tuple[float, float]]] = {"aiomqtt": [], "gmqtt": []}
        with results.phase("f"):
            for i in range(runs):  # in turn, so that both see the same machine
                for transport, rows in ingest.items():
                    rows.append(
                        uvloop.run(
                            site_ingest(broker.port, n, data / f"ingest-{transport}{i}", transport)
                        )
                    )
        (ar, ac), (gr, gc) = (
            (statistics.median(r for r, _ in ingest[t]), statistics.median(c for _, c in ingest[t]))
            for t in ("aiomqtt", "gmqtt")
        )
        print(
            f"(f) site ingest by transport          aiomqtt {ar:>9,.0f} msg/s  {ac:.2f} CPU-s/100k | "
            f"gmqtt {gr:>9,.0f} msg/s  {gc:.2f} CPU-s/100k | gmqtt/aiomqtt: rate {gr / ar:.2f}x, "
            f"CPU per message {gc / ac:.2f}x"
        )
        results.figure(
            "f",
            "(f) site ingest on gmqtt, JSON backlog (msg/s)",
            gr,
            "msg/s",
            baseline=("site ingest on aiomqtt", ar),
        )
        results.figure(
            "f",
            "(f) site ingest on gmqtt (CPU-s per 100k msgs)",
            gc,
            "CPU-s/100k",
            baseline=("site ingest on aiomqtt", ac),
            better="lower",
        )
        results.data["ingest_cpu_per_100k"] = {"aiomqtt": ac, "gmqtt": gc, "bare_aiomqtt": a_cpu}
        checkpoint_cost(results, broker.port, n, data, runs)
    print(
        f"bench process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    results.write(args.json)


if __name__ == "__main__":
    main()
