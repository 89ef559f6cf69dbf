"""Peer comparison: the site runtime against Node-RED on one feed, broker and machine.

    python bench/bench_peers.py [--quick|--full] [--json PATH] [--consumers edge-runtime,node-red]

The feed (bench/peers/feed.py): one-reading JSON messages over 100 keys, published at a fixed
rate with QoS 1 to one mosquitto; event time is the time of sending. Each consumer runs in its
own process and computes 1-s tumbling windows per key (count, sum, min, max, mean), publishing
its summaries to the same broker:

* ``edge-runtime``: ``edge-runtime run`` with one ``windows`` pipeline, the durable spool on
  and the uplink to the broker (its default transport, see BrokerConfig.transport);
* ``edge-runtime-aiomqtt``, ``edge-runtime-gmqtt``: the same on a named transport;
* ``node-red``: Node-RED (installed by bench/peers/setup) running bench/peers/flow.json: an
  ``mqtt in`` node (parsed JSON), a function node with the windows (bench/peers/windows.js)
  and an ``mqtt out`` node;
* ``bare-gmqtt`` / ``bare-aiomqtt`` / ``bare-paho``: receive loops that do nothing with the
  messages (bench/peers/bare.py), the floor of each client library.

A collector in this process checks every summary against the windows computed with numpy from
the feed's own arrays, and records its latency (arrival - window end). CPU is read from /proc:
utime + stime of the consumer's process tree from the moment it has subscribed until the last
expected summary arrived (for bare loops: until it has read the whole feed), and of the
publisher and the broker over the same run. Consumers run one after the other, in a rotated
order on each repeat; medians over repeats. Printed: one line per run, then a table with each
consumer's messages per consumer CPU-second and its ratio to Node-RED's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._proc import MachineSampler, proc_cpu, tree_cpu
from bench._results import Results
from bench.peers.feed import FILTER, SENTINEL_KEY, feed_arrays
from bench.peers.make_flow import render as render_flow
from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.uplink import decode_envelopes

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
NODE_RED = PEERS / "node-red" / "node_modules" / "node-red" / "red.js"
OURS_TOPIC = "edge/bench/summaries"
NODE_RED_TOPIC = "bench/nodered/summaries"
WINDOW_S = 1.0
STATS = ("count", "sum", "min", "max", "mean")
CONSUMERS = (
    "edge-runtime",
    "edge-runtime-aiomqtt",
    "edge-runtime-gmqtt",
    "node-red",
    "bare-gmqtt",
    "bare-aiomqtt",
    "bare-paho",
)

SITE = """
site_id = "bench-peers"
data_dir = "{data}"
[site_broker]
port = {port}
client_id = "{client_id}"
clean_start = true
{transport}
[uplink.broker]
port = {port}
client_id = "{client_id}-uplink"
[uplink]
topic = "{topic}"
[ingest]
qos = 1
[ops]
http_enabled = false
log_format = "text"
log_level = "WARNING"
[[pipelines]]
type = "windows"
name = "peers"
topics = ["{filter}"]
decode = {{ format = "json", key = "topic:2", value = "field:value", time = "field:ts" }}
window = {{ kind = "tumbling", size_s = {size}, allowed_lateness_s = 0, stats = {stats} }}
"""


# -- reference -------------------------------------------------------------------------------


def reference(
    n: int, keys: int, rate: float, t0: float
) -> dict[tuple[str, float], tuple[float, ...]]:
    """(key, window start) -> (count, sum, min, max, mean), with numpy from the feed's arrays."""
    key_idx, values, times = feed_arrays(n, keys, rate, t0)
    windows = np.floor(times / WINDOW_S).astype(np.int64)
    order = np.lexsort((windows, key_idx))
    k, w, v = key_idx[order], windows[order], values[order]
    starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (w[1:] != w[:-1])])
    counts = np.diff(np.r_[starts, k.shape[0]])
    sums = np.add.reduceat(v, starts)
    mins = np.minimum.reduceat(v, starts)
    maxs = np.maximum.reduceat(v, starts)
    return {
        (f"k{kk}", float(ww * WINDOW_S)): (float(c), float(s), float(lo), float(hi), float(s / c))
        for kk, ww, c, s, lo, hi in zip(
            k[starts].tolist(),
            w[starts].tolist(),
            counts.tolist(),
            sums.tolist(),
            mins.tolist(),
            maxs.tolist(),
            strict=True,
        )
    }


# -- collector -------------------------------------------------------------------------------


class Collector:
    """Subscribes to both summary topics; keeps (key, start) -> stats, arrival times."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.reset()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="bench-collector", protocol=paho.MQTTv311
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(OURS_TOPIC, 1), (NODE_RED_TOPIC, 1)])
        self.client.loop_start()

    def reset(self) -> None:
        with self.lock:
            self.got: dict[tuple[str, float], tuple[float, ...]] = {}
            self.arrivals: list[tuple[float, float]] = []  # (arrival, window end)
            self.duplicates = 0
            self.malformed = 0
            self.last_arrival = 0.0

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        try:
            rows = self._rows(message.topic, message.payload)
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.malformed += 1
            return
        with self.lock:
            for key, start, end, stats in rows:
                if key == SENTINEL_KEY:
                    continue
                if (key, start) in self.got:
                    self.duplicates += 1
                self.got[(key, start)] = stats
                self.arrivals.append((now, end))
            self.last_arrival = now

    @staticmethod
    def _rows(topic: str, payload: bytes) -> list[tuple[str, float, float, tuple[float, ...]]]:
        if topic == OURS_TOPIC:
            return [
                (
                    e.key,
                    float(e.window_start),
                    float(e.window_end),
                    tuple(float(e.stats[s]) for s in STATS),
                )  # type: ignore[arg-type]
                for e in decode_envelopes(payload)
            ]
        return [
            (d["key"], float(d["start"]), float(d["end"]), tuple(float(d[s]) for s in STATS))
            for d in orjson.loads(payload)
        ]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def check(
    expected: dict[tuple[str, float], tuple[float, ...]],
    got: dict[tuple[str, float], tuple[float, ...]],
) -> dict[str, int]:
    correct = wrong = missing = 0
    received_readings = 0
    for pair, want in expected.items():
        have = got.get(pair)
        if have is None:
            missing += 1
            continue
        received_readings += int(have[0])
        ok = (
            have[0] == want[0]
            and have[2] == want[2]
            and have[3] == want[3]
            and math.isclose(have[1], want[1], rel_tol=1e-9, abs_tol=1e-9)
            and math.isclose(have[4], want[4], rel_tol=1e-9, abs_tol=1e-9)
        )
        correct += ok
        wrong += not ok
    unexpected = len(set(got) - set(expected))
    return {
        "windows_expected": len(expected),
        "windows_correct": correct,
        "windows_wrong": wrong,
        "windows_missing": missing,
        "windows_unexpected": unexpected,
        "readings_in_summaries": received_readings,
    }


# -- consumers ---------------------------------------------------------------------------------


@dataclass
class Consumer:
    name: str
    client_id: str
    proc: subprocess.Popen[bytes]
    summaries: bool = True  # False: a bare loop, done when it has read the feed
    log: Path | None = None


def start_consumer(name: str, port: int, work: Path, messages: int) -> Consumer:
    client_id = f"bench-{name}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    log = work / f"{name}.log"
    out = log.open("wb")
    if name.startswith("edge-runtime"):
        # "edge-runtime" keeps the default transport; "-aiomqtt" / "-gmqtt" name one
        lib = name.removeprefix("edge-runtime").removeprefix("-")
        transport = f'transport = "{lib}"' if lib else ""
        cfg = work / "site.toml"
        cfg.write_text(
            SITE.format(
                data=work / "data",
                port=port,
                client_id=client_id,
                transport=transport,
                topic=OURS_TOPIC,
                filter=FILTER,
                size=WINDOW_S,
                stats=json.dumps(list(STATS)),
            )
        )
        argv = [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        return Consumer(name, client_id, proc, log=log)
    if name == "node-red":
        if not NODE_RED.exists():
            raise SystemExit("Node-RED is not installed: run bench/peers/setup first")
        if (PEERS / "flow.json").read_text() != render_flow():
            raise SystemExit("bench/peers/flow.json is out of date: run bench/peers/make_flow.py")
        user = work / "node-red-user"
        user.mkdir()
        (user / "flows.json").write_text((PEERS / "flow.json").read_text())
        env = {
            **os.environ,
            "BENCH_MQTT_PORT": str(port),
            "BENCH_CLIENT_ID": client_id,
            "BENCH_NODERED_UI_PORT": str(free_port()),
        }
        argv = [
            "node",
            str(NODE_RED),
            "--settings",
            str(PEERS / "settings.js"),
            "--userDir",
            str(user),
            "flows.json",
        ]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=user)
        return Consumer(name, client_id, proc, log=log)
    if name.startswith("bare-"):
        argv = [
            sys.executable,
            str(PEERS / "bare.py"),
            "--lib",
            name.removeprefix("bare-"),
            "--port",
            str(port),
            "--client-id",
            client_id,
            "--messages",
            str(messages + 1),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=out, cwd=ROOT)
        return Consumer(name, client_id, proc, summaries=False, log=log)
    raise SystemExit(f"unknown consumer {name!r}; choose from {', '.join(CONSUMERS)}")


def wait_subscribed(broker_log: Path, consumer: Consumer, timeout: float = 60.0) -> None:
    """Until mosquitto's log shows the consumer's subscription to the feed."""
    needle = f" {consumer.client_id} 1 {FILTER}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer.proc.poll() is not None:
            raise SystemExit(f"{consumer.name} exited early; see {consumer.log}")
        if broker_log.exists() and needle in broker_log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise SystemExit(f"{consumer.name} did not subscribe within {timeout}s; see {consumer.log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- one run -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    consumer: str
    messages: int
    rate: float
    wall_s: float
    consumer_cpu_s: float
    broker_cpu_s: float
    publisher_cpu_s: float
    lost_messages: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    machine: dict[str, float] = field(default_factory=dict)
    publisher_max_lag_s: float = 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.consumer_cpu_s / self.messages * 100_000

    @property
    def msgs_per_cpu_s(self) -> float:
        return self.messages / max(self.consumer_cpu_s, 1e-9)


def run_one(
    name: str,
    broker: MosquittoProcess,
    collector: Collector,
    messages: int,
    keys: int,
    rate: float,
    expected_cache: dict[float, Any],
) -> RunResult:
    assert broker.proc is not None
    with tempfile.TemporaryDirectory(prefix=f"bench-peers-{name}-") as tmp:
        work = Path(tmp)
        consumer = start_consumer(name, broker.port, work, messages)
        try:
            wait_subscribed(broker.workdir / "mosquitto.log", consumer)
            time.sleep(1.0)  # let the uplink connect and the process settle
            collector.reset()
            t0 = math.ceil(time.time()) + 1.0  # the feed starts on a window boundary
            c0, b0 = tree_cpu(consumer.proc.pid), proc_cpu(broker.proc.pid)
            with MachineSampler() as machine:
                pub = subprocess.Popen(
                    [
                        sys.executable,
                        str(PEERS / "feed.py"),
                        "--port",
                        str(broker.port),
                        "--messages",
                        str(messages),
                        "--keys",
                        str(keys),
                        "--rate",
                        str(rate),
                        "--t0",
                        repr(t0),
                    ],
                    stdout=subprocess.PIPE,
                    cwd=ROOT,
                )
                expected = expected_cache.get(t0)
                if expected is None:
                    expected = expected_cache[t0] = reference(messages, keys, rate, t0)
                done_at, used, bare_out = _wait_done(consumer, collector, expected, pub, c0)
                b1 = proc_cpu(broker.proc.pid)
                pub_stdout = pub.stdout.read() if pub.stdout else b""
                _, status, usage = os.wait4(pub.pid, 0)
                pub.returncode = os.waitstatus_to_exitcode(status)
            publisher_cpu = usage.ru_utime + usage.ru_stime
            pub_info = json.loads(pub_stdout or b"{}")
        finally:
            stop(consumer.proc)
        with collector.lock:
            got = dict(collector.got)
            arrivals = list(collector.arrivals)
            duplicates = collector.duplicates
        if consumer.summaries:
            checks = check(expected, got)
            checks["duplicates"] = duplicates
            lost = messages - checks["readings_in_summaries"]
            lat = np.array([(a - end) * 1000 for a, end in arrivals]) if arrivals else np.zeros(1)
            latency = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)}
            latency["max"] = float(lat.max())
        else:
            checks = {"received": int(bare_out.get("received", 0))}
            lost = messages + 1 - checks["received"]
            latency = {}
        return RunResult(
            consumer=name,
            messages=messages,
            rate=rate,
            wall_s=done_at - t0,
            consumer_cpu_s=used,
            broker_cpu_s=b1 - b0,
            publisher_cpu_s=publisher_cpu,
            lost_messages=lost,
            latency_ms=latency,
            checks=checks,
            machine=machine.result.to_dict(),
            publisher_max_lag_s=float(pub_info.get("max_lag_s", 0.0)),
        )


def _wait_done(
    consumer: Consumer,
    collector: Collector,
    expected: dict[Any, Any],
    pub: subprocess.Popen[bytes],
    cpu0: float,
) -> tuple[float, float, dict[str, Any]]:
    """Wait until the consumer is done; return (time, consumer CPU-s used, bare loop report)."""
    if not consumer.summaries:
        # a bare loop exits once it has read the feed and reports its own CPU (process_time)
        # at subscription and at the end: /proc has nothing left of it by then
        out, _ = consumer.proc.communicate(timeout=900)
        report = json.loads(out.splitlines()[-1]) if out.strip() else {}
        used = float(report.get("cpu_done", 0.0)) - float(report.get("cpu_ready", 0.0))
        return float(report.get("done_at", time.time())), used, report
    want = len(expected)
    quiet_limit = 20.0
    while True:
        time.sleep(0.02)
        with collector.lock:
            have = sum(1 for k in collector.got if k in expected)
            last = collector.last_arrival
        if have >= want:
            return time.time(), tree_cpu(consumer.proc.pid) - cpu0, {}
        if consumer.proc.poll() is not None:
            raise SystemExit(f"{consumer.name} exited during the run; see {consumer.log}")
        if pub.poll() is not None and time.time() - max(last, 0) > quiet_limit:
            # the feed is out and nothing came for a while: what is missing is lost
            return time.time(), tree_cpu(consumer.proc.pid) - cpu0, {}


# -- main --------------------------------------------------------------------------------------


def summarise(results: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Medians per consumer, and each one's messages per CPU-second over Node-RED's."""
    by: dict[str, list[RunResult]] = {}
    for r in results:
        by.setdefault(r.consumer, []).append(r)
    peer = by.get("node-red", [])
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        row: dict[str, Any] = {
            "runs": len(runs),
            "cpu_per_100k": statistics.median(r.cpu_per_100k for r in runs),
            "cpu_per_100k_range": [
                min(r.cpu_per_100k for r in runs),
                max(r.cpu_per_100k for r in runs),
            ],
            "msgs_per_cpu_s": statistics.median(r.msgs_per_cpu_s for r in runs),
            "wall_s": statistics.median(r.wall_s for r in runs),
            "broker_cpu_per_100k": statistics.median(
                r.broker_cpu_s / r.messages * 1e5 for r in runs
            ),
            "publisher_cpu_per_100k": statistics.median(
                r.publisher_cpu_s / r.messages * 1e5 for r in runs
            ),
            "lost_messages": max(r.lost_messages for r in runs),
            "all_correct": all(
                r.checks.get("windows_correct", 0) == r.checks.get("windows_expected", -1)
                for r in runs
            )
            if runs[0].checks.get("windows_expected") is not None
            else None,
            "latency_ms": {
                q: statistics.median(r.latency_ms[q] for r in runs) for q in runs[0].latency_ms
            },
            "steal_pct_max": max(r.machine["steal_pct"] for r in runs),
            "load1_max": max(max(r.machine["load1_start"], r.machine["load1_end"]) for r in runs),
        }
        if peer:
            # the ratio of the medians, and the range of the ratios within each repeat (the
            # runs of one repeat are next to each other in time)
            row["vs_node_red"] = row["msgs_per_cpu_s"] / statistics.median(
                r.msgs_per_cpu_s for r in peer
            )
            paired = [a.msgs_per_cpu_s / b.msgs_per_cpu_s for a, b in zip(runs, peer, strict=False)]
            row["vs_node_red_paired_range"] = [min(paired), max(paired)]
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="60,000 messages, 1 repeat")
    size.add_argument("--full", action="store_true", help="300,000 messages, 3 repeats (default)")
    parser.add_argument("--messages", type=int, help="messages in the feed")
    parser.add_argument("--rate", type=float, default=10_000, help="messages/s (default 10,000)")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--consumers",
        default="edge-runtime,node-red,edge-runtime-aiomqtt,bare-gmqtt",
        help=f"comma-separated, from: {', '.join(CONSUMERS)}",
    )
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args()
    messages = args.messages or (60_000 if args.quick else 300_000)
    repeats = args.repeats or (1 if args.quick else 3)
    names = [c for c in args.consumers.split(",") if c]
    print(
        f"peer comparison: {messages:,} one-reading JSON messages over {args.keys} keys at "
        f"{args.rate:,.0f}/s (QoS 1), 1-s tumbling windows (count, sum, min, max, mean); "
        f"{os.cpu_count()} CPUs; consumers {', '.join(names)}; {repeats} repeat(s)"
    )
    results_list: list[RunResult] = []
    cache: dict[float, Any] = {}
    with MosquittoProcess(extra_conf="log_type subscribe") as broker:
        collector = Collector(broker.port)
        try:
            for rep in range(repeats):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    r = run_one(name, broker, collector, messages, args.keys, args.rate, cache)
                    results_list.append(r)
                    lat = r.latency_ms
                    print(
                        f"  {name:<22} {r.cpu_per_100k:6.2f} CPU-s/100k  {r.msgs_per_cpu_s:>9,.0f} msg/CPU-s  "
                        f"wall {r.wall_s:5.1f}s  lost {r.lost_messages}  "
                        + (
                            f"windows {r.checks['windows_correct']}/{r.checks['windows_expected']} correct  "
                            f"latency p50 {lat['p50']:.0f} p99 {lat['p99']:.0f} ms  "
                            if "windows_expected" in r.checks
                            else ""
                        )
                        + f"broker {r.broker_cpu_s / messages * 1e5:.2f}  publisher {r.publisher_cpu_s / messages * 1e5:.2f} CPU-s/100k  "
                        f"[{machine_brief(r.machine)}]",
                        flush=True,
                    )
        finally:
            collector.close()
    summary = summarise(results_list)
    print(
        f"{'consumer':<22} {'CPU-s/100k':>10} {'msg/CPU-s':>10} {'vs Node-RED':>11} {'lost':>5} correct"
    )
    for name, row in summary.items():
        ratio = row.get("vs_node_red")
        print(
            f"{name:<22} {row['cpu_per_100k']:>10.2f} {row['msgs_per_cpu_s']:>10,.0f} "
            f"{(f'{ratio:.2f}x' if ratio else '-'):>11} {row['lost_messages']:>5} {row['all_correct']}"
        )
    results = Results("bench_peers", quick=bool(args.quick))
    peer = summary.get("node-red")
    for name, row in summary.items():
        runs = results_of(results_list, name)
        machine = {
            "load1_start": max(r.machine["load1_start"] for r in runs),
            "load1_end": max(r.machine["load1_end"] for r in runs),
            "steal_pct": max(r.machine["steal_pct"] for r in runs),
            "busy_pct": statistics.median(r.machine["busy_pct"] for r in runs),
            "seconds": sum(r.machine["seconds"] for r in runs),
        }
        correct = row["all_correct"]
        note = f"lost {row['lost_messages']}" + (
            "" if correct is None else (", all windows correct" if correct else ", WRONG windows")
        )
        results.figure(
            name,
            f"{name}: messages per consumer CPU-second",
            row["msgs_per_cpu_s"],
            "msg/CPU-s",
            baseline=("node-red", peer["msgs_per_cpu_s"]) if peer and name != "node-red" else None,
            note=note,
            machine=machine,
        )
    results.data = {
        "messages": messages,
        "rate": args.rate,
        "keys": args.keys,
        "repeats": repeats,
        "runs": [asdict(r) | {"cpu_per_100k": r.cpu_per_100k} for r in results_list],
        "summary": summary,
    }
    results.write(args.json)


def results_of(runs: list[RunResult], name: str) -> list[RunResult]:
    return [r for r in runs if r.consumer == name]


def machine_brief(m: dict[str, float]) -> str:
    return f"load {m['load1_start']:.2f}->{m['load1_end']:.2f}, steal {m['steal_pct']:.1f}%"


if __name__ == "__main__":
    main()
