"""Measure what the compose site and core use under the container drill's load, outside
containers: the figures `edge-runtime size` does not give (the site runtime with the real
site.toml and event-time windows, both brokers' memory, the core receiver, NATS).

    .venv/bin/python containers/sizing/measure.py [--seconds 60] [--rate 300]
    .venv/bin/python containers/sizing/measure.py --broker-queue [N]

Starts a core broker, NATS JetStream, the core receiver (SQLite, forwarding to NATS, verifying
signed uplink against a registry) and two sites (a persistent mosquitto each and
``edge-runtime run`` with containers/compose/site/site.toml, its identity from ``edge-runtime
provision``; the core link without TLS or password, the one difference), then publishes the
Auckland pedestrian counts into each site broker at ``--rate`` readings/s (the drill's
EDGE_DRILL_RATE) for ``--seconds``. Every half second it reads each process's CPU time and
resident set from /proc; it prints per process the mean cores over the feed, the busiest 5 s,
the mean RSS and the peak (VmHWM), and the rates from the runtimes' /status.

``--core-outage S`` stops the core receiver 10 s into the feed for S seconds, as the drill's
(b) does, so that the core broker queues and the receiver drains a backlog.

``--broker-queue`` measures instead what bounds the site broker's memory: a persistent QoS 1
session (the runtime's) that is away while N Auckland readings are published (default: the
max_queued_messages of containers/compose/site/mosquitto.conf, the most it queues).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import aiomqtt
import orjson

from edge_runtime.broker import MosquittoProcess, free_port, wait_port
from edge_runtime.cli.feed import feed_akl
from edge_runtime.datasets.akl import iter_readings

HERE = Path(__file__).resolve().parent
SITE_TOML = HERE.parent / "compose" / "site" / "site.toml"
SITE_MOSQUITTO = HERE.parent / "compose" / "site" / "mosquitto.conf"
TICK = os.sysconf("SC_CLK_TCK")
EDGE = str(Path(sys.executable).parent / "edge-runtime")


@dataclass
class Watched:
    name: str
    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, cpu s, MiB
    hwm_mb: float = 0.0

    def sample(self) -> None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        cpu = sum(int(f) for f in stat[stat.rindex(")") + 2 :].split()[11:15]) / TICK
        mem = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmRSS:", "VmHWM:"))
        }
        self.samples.append((time.monotonic(), cpu, mem.get("VmRSS", 0.0)))
        self.hwm_mb = max(self.hwm_mb, mem.get("VmHWM", 0.0))

    def figures(self, t0: float, t1: float) -> dict[str, float]:
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if len(s) < 2:
            return dict.fromkeys(("mean_cores", "busiest_5s_cores", "mean_rss_mb"), 0.0) | {
                "peak_rss_mb": max((x[2] for x in s), default=0.0),
                "vmhwm_mb": self.hwm_mb,
            }
        mean_cores = (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
        busiest = max(
            (
                (b[1] - a[1]) / (b[0] - a[0])
                for i, a in enumerate(s)
                for b in s[i + 10 : i + 11]  # 10 samples: 5 s apart
            ),
            default=mean_cores,
        )
        return {
            "mean_cores": mean_cores,
            "busiest_5s_cores": busiest,
            "mean_rss_mb": sum(x[2] for x in s) / len(s),
            "peak_rss_mb": max(x[2] for x in s),
            "vmhwm_mb": self.hwm_mb,
        }


def pid(broker: MosquittoProcess) -> int:
    assert broker.proc is not None, "start the broker first"
    return broker.proc.pid


def status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        doc: dict[str, object] = json.loads(resp.read())
    return doc


def wait_ready(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} not ready within 60 s")


def site_config(site_id: str, work: Path, mqtt: int, core: int, ops: int) -> str:
    text = SITE_TOML.read_text()
    swaps = {
        'site_id = "akl-queen-st-01"': f'site_id = "{site_id}"',
        'client_id = "edge-akl-queen-st-01"': f'client_id = "edge-{site_id}"',
        'data_dir = "/var/lib/edge-runtime"': f'data_dir = "{work / "data"}"',
        'dir = "/run/secrets/edge-runtime"': f'dir = "{work / "identity"}"',
        "port = 1883": f"port = {mqtt}",
        "port = 8883": f"port = {core}",
        "http_port = 9108": f"http_port = {ops}",
        'username = "akl-queen-st-01"\n': "",
        'password_file = "/run/secrets/edge-runtime/broker-password"\n': "",
        'tls = { ca_file = "/run/secrets/edge-runtime/ca.pem" }\n': "",
    }
    for old, new in swaps.items():
        assert old in text, f"{SITE_TOML} has no {old!r}"
        text = text.replace(old, new)
    return text


class Rig:
    """The processes under test; stopping it ends them, newest first."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.brokers: list[MosquittoProcess] = []
        self.watched: list[Watched] = []
        self.receiver: tuple[list[str], int, subprocess.Popen[bytes]] | None = None

    def broker(self, name: str, workdir: Path) -> MosquittoProcess:
        broker = MosquittoProcess(persistence=True, workdir=workdir)
        broker.start()
        self.brokers.append(broker)
        self.watched.append(Watched(f"{name} mosquitto", pid(broker)))
        return broker

    def spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        self.watched.append(Watched(name, proc.pid))
        return proc

    def provision(self, site_ids: list[str]) -> Path:
        """The sites' identities, and the core's registry of them."""
        registry = self.work / "registry"
        for site_id in site_ids:
            argv = [EDGE, "provision", site_id, "--registry", str(registry), "--out"]
            out = self.work / site_id / "identity"
            subprocess.run([*argv, str(out)], check=True, capture_output=True)
        return registry

    def core(self, registry: Path) -> tuple[MosquittoProcess, int]:
        """Core broker, NATS JetStream and the core receiver: (broker, HTTP port)."""
        broker = self.broker("core", self.work / "core-broker")
        nats_port = free_port()
        (self.work / "nats").mkdir()
        nats = ["nats-server", "-js", "-sd", str(self.work / "nats"), "-a", "127.0.0.1"]
        self.spawn("nats-server", [*nats, "-p", str(nats_port)], self.work / "nats.log")
        wait_port("127.0.0.1", nats_port)
        http = free_port()
        argv = [EDGE, "core", "--broker", f"127.0.0.1:{broker.port}", "--db"]
        argv += [str(self.work / "core.db"), "--registry", str(registry), "--nats"]
        argv += [f"nats://127.0.0.1:{nats_port}", "--http-port", str(http)]
        proc = self.spawn("core receiver", argv, self.work / "core.log")
        wait_ready(http, proc, "the core receiver")
        self.receiver = (argv, http, proc)
        return broker, http

    def core_outage(self, after: float, seconds: float) -> None:
        """Stops the core receiver ``after`` seconds for ``seconds`` (the drill's (b))."""
        assert self.receiver is not None, "start the core first"
        argv, http, proc = self.receiver
        time.sleep(after)
        print(f"stopping the core receiver for {seconds:g} s")
        proc.terminate()
        proc.wait(30)
        time.sleep(seconds)
        again = self.spawn("core receiver, restarted", argv, self.work / "core-2.log")
        wait_ready(http, again, "the core receiver")
        self.receiver = (argv, http, again)

    def site(self, site_id: str, core: int) -> tuple[MosquittoProcess, int]:
        """A site broker and runtime with the compose site.toml: (broker, ops port)."""
        sdir = self.work / site_id
        broker = self.broker(site_id, sdir / "broker")
        ops, cfg = free_port(), sdir / "site.toml"
        cfg.write_text(site_config(site_id, sdir, broker.port, core, ops))
        argv = [EDGE, "run", "-c", str(cfg), "--quiet"]
        proc = self.spawn(f"{site_id} runtime", argv, sdir / "runtime.log")
        wait_ready(ops, proc, f"the {site_id} runtime")
        return broker, ops

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for broker in self.brokers:
            broker.stop()


def sample_while(watched: list[Watched], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for w in watched:
            w.sample()


def summaries_out(doc: dict[str, object]) -> int:
    out = doc.get("summaries_out")
    return sum(int(v) for v in out.values()) if isinstance(out, dict) else 0


def messages_in(doc: dict[str, object]) -> int:
    n = doc.get("messages_in")
    return int(n) if isinstance(n, int | float) else 0


def max_queued() -> int:
    for line in SITE_MOSQUITTO.read_text().splitlines():
        if line.startswith("max_queued_messages "):
            return int(line.split()[1])
    raise RuntimeError(f"{SITE_MOSQUITTO} sets no max_queued_messages")


def memory(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return ", ".join(" ".join(x.split()) for x in status if x.startswith(("VmRSS", "VmHWM")))


def broker_queue(n: int) -> int:
    """The site broker's memory with ``n`` readings queued for the runtime's offline session."""
    limit = max_queued()
    with MosquittoProcess(persistence=True, extra_conf=f"max_queued_messages {limit}\n") as b:
        print(f"site broker (max_queued_messages {limit}), empty: {memory(pid(b))}")

        async def fill() -> None:
            runtime = aiomqtt.Client("127.0.0.1", b.port, identifier="rt", clean_session=False)
            async with runtime:
                await runtime.subscribe("akl/ped/+/count", qos=1)
            async with aiomqtt.Client("127.0.0.1", b.port, identifier="feed") as feed:
                for sent, r in enumerate(iter_readings(), 1):
                    payload = orjson.dumps({"value": r.value, "ts": r.ts})
                    await feed.publish(f"akl/ped/{r.sensor}/count", payload, qos=1)
                    if sent == n:
                        return

        asyncio.run(fill())
        time.sleep(1)
        print(f"{n:,} readings queued for the offline runtime: {memory(pid(b))}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the feed runs")
    ap.add_argument("--rate", type=float, default=300.0, help="readings/s into each site")
    ap.add_argument(
        "--broker-queue",
        type=int,
        nargs="?",
        const=-1,
        metavar="N",
        help="only the site broker's memory with N readings queued (default: its "
        "max_queued_messages)",
    )
    ap.add_argument(
        "--core-outage",
        type=float,
        default=0.0,
        metavar="S",
        help="stop the core receiver 10 s into the feed for S seconds (the drill's 30 s)",
    )
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds measured after the feed ends"
    )
    args = ap.parse_args()
    if args.broker_queue is not None:
        return broker_queue(args.broker_queue if args.broker_queue > 0 else max_queued())
    start = date(2019, 1, 1)
    end = start + timedelta(days=int(args.seconds * args.rate / (21 * 24)))
    with tempfile.TemporaryDirectory(prefix="edge-measure-") as tmp:
        rig = Rig(Path(tmp))
        try:
            site_ids = ["akl-measure-1", "akl-measure-2"]
            registry = rig.provision(site_ids)
            core_broker, core_http = rig.core(registry)
            sites = [(s, *rig.site(s, core_broker.port)) for s in site_ids]
            stop = threading.Event()
            sampler = threading.Thread(
                target=sample_while, args=(rig.watched, stop), name="sampler"
            )
            sampler.start()
            time.sleep(5)  # idle, for the first samples
            before = [status(ops) for _, _, ops in sites]
            t0 = time.monotonic()
            print(f"feeding {start}..{end} into 2 sites at {args.rate:g} readings/s each")

            async def feed() -> None:
                async with asyncio.TaskGroup() as tg:
                    for _, broker, _ in sites:
                        tg.create_task(feed_akl("127.0.0.1", broker.port, start, end, args.rate))
                    if args.core_outage:
                        tg.create_task(asyncio.to_thread(rig.core_outage, 10, args.core_outage))

            asyncio.run(feed())
            t1 = time.monotonic()
            after = [status(ops) for _, _, ops in sites]
            time.sleep(args.settle)  # what the feed left queued
            stop.set()
            sampler.join()
            t2 = time.monotonic()
            core_status = status(core_http)
        finally:
            rig.stop()
    span = t1 - t0
    print(f"feed: {span:.1f} s")
    for (site_id, _, _), s0, s1 in zip(sites, before, after, strict=True):
        print(
            f"  {site_id}: {(messages_in(s1) - messages_in(s0)) / span:.0f} msg/s in, "
            f"{(summaries_out(s1) - summaries_out(s0)) / span:.1f} summaries/s out"
        )
    print(f"  core /status: {json.dumps({'stored': core_status.get('stored')})}")
    print(
        f"  {'process':<24} {'mean cores':>10} {'busiest 5s':>10} {'mean MiB':>9} "
        f"{'peak MiB':>9} {'VmHWM MiB':>9}"
    )
    for w in rig.watched:
        f = w.figures(t0, t2)
        print(
            f"  {w.name:<24} {f['mean_cores']:>10.3f} {f['busiest_5s_cores']:>10.3f} "
            f"{f['mean_rss_mb']:>9.1f} {f['peak_rss_mb']:>9.1f} {f['vmhwm_mb']:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
