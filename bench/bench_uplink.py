"""Benchmark of end-to-end delivery: draining a site's spool after an outage into the core.

Run ``python bench/bench_uplink.py`` (``--quick`` for smaller sizes). One run, one mosquitto
(the core broker), one core receiver as its own process (``edge-runtime core``: SQLite store
committed with ``synchronous=FULL``, gmqtt with PUBACKs held until the commit, an
acknowledgement to the site per round), and in this process the site's uplink as the runtime
builds it (spool, sender, MQTT link subscribed to the site's ack topic):

(a) ``delivery = "core"``: N summaries spooled while the link was down are drained; the clock
    stops when the spool is empty, i.e. when the core has acknowledged every one of them as
    stored. Printed: summaries/s end to end into the core store, and the time from sending a
    record to its acknowledgement (p50, p99);
(b) the baseline, measured the same way in the same run: ``delivery = "broker"``, records
    deleted on the broker's PUBACK (the guarantee this project had before), and the ratio.
    How long the core then takes to have all of them stored is printed beside it.

(c) the CPU cost of signed uplink (``--signing`` runs only this part): per 1,000 summaries
    in messages of 500 (the site's default max_batch), the site's sealing (Ed25519 signature
    over the message) against encoding the message, and the core's opening, verifying and
    replay check against decoding alone, each measured in the same run.

The two drains use different site ids, so neither finds the other's summaries stored. The
target printed beside the figures (20,000 summaries/s end to end) is this project's. A
measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.clock import SystemClock
from edge_runtime.core.config import CoreConfig
from edge_runtime.core.verify import UplinkVerifier
from edge_runtime.identity import Sealer
from edge_runtime.mqtt import MqttLink
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.types import Envelope, RawMessage, Summary
from edge_runtime.uplink import encode_envelopes
from edge_runtime.uplink.config import Delivery, SenderConfig
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import Spool, SpoolConfig, SyncSpool
from edge_runtime.uplink.spooled import SpooledUplink

TARGET_PER_S = 20_000
STATS = {"count": 12, "sum": 123.4, "min": 1.5, "max": 20.25, "mean": 10.28, "p95": 18.5}


def make_envelopes(site: str, n: int, first: int = 0) -> list[Envelope]:
    return [
        Envelope.wrap(
            Summary(
                "ped",
                f"sensor-{i % 500}",
                1.7e9 + (i // 500) * 60.0,
                1.7e9 + (i // 500 + 1) * 60.0,
                STATS,
            ),
            site=site,
            seq=0,
            created_at=time.time(),
            version="bench",
            config_hash="bench",
        )
        for i in range(first, first + n)
    ]


def core_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        doc: dict[str, Any] = orjson.loads(resp.read())
        return doc


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
            return True
    except OSError:
        return False


async def wait_core_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            raise SystemExit("the core receiver exited")
        if await asyncio.to_thread(_ready, port):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the core receiver never became ready")


async def core_stored(port: int, site: str) -> int:
    doc = await asyncio.to_thread(core_status, port)
    return int(doc["sites"].get(site, {}).get("received", 0))


@contextlib.asynccontextmanager
async def site_uplink(
    work: Path, broker: MosquittoProcess, site: str, delivery: Delivery, backlog: int = 0
) -> AsyncIterator[tuple[Spool, Sender]]:
    """The site's uplink as the runtime wires it, with ``backlog`` summaries spooled while
    the link was down; sending from when the block starts."""
    config = SpoolConfig(path=str(work / f"{site}.db"), max_bytes=1 << 40)
    if backlog:
        envelopes = make_envelopes(site, backlog)
        with SyncSpool(config) as sync:
            for start in range(0, backlog, 20_000):
                sync.append(envelopes[start : start + 20_000])
    ack_topic = f"edge/{site}/acks" if delivery == "core" else None
    holder: list[SpooledUplink] = []

    def from_core(message: RawMessage) -> None:
        holder[0].receive(message)

    link = MqttLink(
        BrokerConfig(port=broker.port),
        client_id=f"{site}-uplink-{os.getpid()}",
        role="core",
        subscriptions=[ack_topic] if ack_topic else [],
        sink=from_core,
    )
    sender_config = SenderConfig(topic=f"edge/{site}/summaries", delivery=delivery)
    spool = Spool(config)
    sender = Sender(spool, link, sender_config, link_generation=lambda: link.connects)
    uplink = SpooledUplink(
        spool,
        sender,
        link=link,
        site_id=site,
        version="bench",
        config_hash="bench",
        clock=SystemClock(),
        ack_topic=ack_topic,
    )
    holder.append(uplink)
    async with uplink, link:
        await link.wait_connected()
        async with asyncio.TaskGroup() as group:
            task = group.create_task(uplink.run(), name="bench-sender")
            yield spool, sender
            task.cancel()


async def drained(spool: Spool) -> None:
    while spool.stats().depth:
        await asyncio.sleep(0.002)


async def drain(
    work: Path, broker: MosquittoProcess, core_port: int, delivery: Delivery, n: int
) -> dict[str, Any]:
    site = f"bench-{delivery}"
    async with site_uplink(work, broker, site, delivery, backlog=n) as (spool, sender):
        started = time.perf_counter()
        await drained(spool)
        drained_s = time.perf_counter() - started
        stats = sender.stats()
    while await core_stored(core_port, site) < n:
        await asyncio.sleep(0.02)
    stored_s = time.perf_counter() - started
    return {
        "rate": n / drained_s,
        "drained_s": drained_s,
        "stored_s": stored_s,
        "p50": stats.ack_p50_ms,
        "p99": stats.ack_p99_ms,
        "messages": stats.messages_sent,
        "resent": stats.resent,
    }


async def live(work: Path, broker: MosquittoProcess, rate: float, seconds: float) -> dict[str, Any]:
    """Live traffic, no backlog: summaries appended as pipelines emit them (every 50 ms)."""
    site = "bench-live"
    every = 0.05
    per_tick = int(rate * every)
    tick = 0
    async with site_uplink(work, broker, site, "core") as (spool, sender):
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            await spool.append(make_envelopes(site, per_tick, first=tick * per_tick))
            tick += 1
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await drained(spool)
        stats = sender.stats()
    return {"p50": stats.ack_p50_ms, "p99": stats.ack_p99_ms, "acked": stats.core_acked}


def signing_cost(rounds: int = 200) -> None:
    """(c): the signing cost at both ends, per 1,000 summaries (see the module docstring)."""

    class _Registry:  # the verifier needs only public_key()
        def __init__(self, key: Ed25519PrivateKey) -> None:
            self.key = key.public_key()

        def public_key(self, site: str) -> Any:
            return self.key

    per_message = 500
    envelopes = make_envelopes("bench-sign", per_message)
    key = Ed25519PrivateKey.generate()
    sealer = Sealer(key, "bench-sign")
    t0 = time.perf_counter()
    for _ in range(rounds):
        payload = encode_envelopes(envelopes, "msgpack")
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sealed = [sealer.seal("uplink", payload) for _ in range(rounds)]
    seal_s = time.perf_counter() - t0
    plain = UplinkVerifier(CoreConfig(), None)
    signed = UplinkVerifier(CoreConfig(), _Registry(key))  # type: ignore[arg-type]
    now = time.time()
    t0 = time.perf_counter()
    for _ in range(rounds):
        plain.envelopes(payload, {}, now)
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for message in sealed:
        signed.envelopes(message, {}, now)
    verify_s = time.perf_counter() - t0
    per_k = 1000 / (rounds * per_message) * 1000  # ms per 1,000 summaries
    print(
        f"(c) signed uplink, CPU per 1,000 summaries ({per_message} per message, {rounds} messages)"
    )
    print(
        f"    site:  encode {encode_s * per_k:.3f} ms, + seal {seal_s * per_k:.3f} ms ({seal_s / encode_s:.1%} of the encode)"
    )
    print(
        f"    core:  decode {decode_s * per_k:.3f} ms, + open/verify/replay check {(verify_s - decode_s) * per_k:.3f} ms (signed/unsigned x{verify_s / decode_s:.2f})"
    )
    print(
        f"    bytes: {len(payload)} unsigned, {len(sealed[0])} sealed (+{len(sealed[0]) - len(payload)})"
    )


async def main(quick: bool) -> None:
    n = 50_000 if quick else 200_000
    work = Path(tempfile.mkdtemp(prefix="bench-uplink-"))
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # paho: "N pending publish calls"
    broker = MosquittoProcess(workdir=work / "broker")
    broker.start()
    core_port = free_port()
    core = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_runtime",
        "core",
        "--broker",
        f"127.0.0.1:{broker.port}",
        "--db",
        str(work / "core.db"),
        "--http-port",
        str(core_port),
        "--log-format",
        "text",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_core_ready(core_port, core)
        print(f"bench_uplink: {n:,} summaries spooled during an outage, then drained to the core")
        print(
            f"  machine: {os.cpu_count()} CPUs; core receiver: SQLite synchronous=FULL, gmqtt, manual PUBACK"
        )
        core_ack = await drain(work, broker, core_port, "core", n)
        baseline = await drain(work, broker, core_port, "broker", n)
        steady = await live(work, broker, rate=2000.0, seconds=5.0)
        ratio = core_ack["rate"] / baseline["rate"]
        print()
        print(
            f"  (a) core acknowledgements   {core_ack['rate']:>10,.0f} summaries/s end to end into the core store "
            f"(target >= {TARGET_PER_S:,}: {'met' if core_ack['rate'] >= TARGET_PER_S else 'NOT met'})"
        )
        print(
            f"      spool empty after       {core_ack['drained_s']:>10.2f} s  ({core_ack['messages']:,} uplink messages, "
            f"{core_ack['resent']:,} resent)"
        )
        print(
            f"      ack latency             p50 {core_ack['p50']:.1f} ms, p99 {core_ack['p99']:.1f} ms (send -> core ack; all of the backlog in flight at once, up to max_unacked)"
        )
        print(
            f"  (b) broker PUBACK only      {baseline['rate']:>10,.0f} summaries/s (spool empty after {baseline['drained_s']:.2f} s; "
            f"the core had them all stored after {baseline['stored_s']:.2f} s: "
            f"{n / baseline['stored_s']:,.0f} summaries/s end to end)"
        )
        print(
            f"  ratio core-ack / PUBACK-only: {ratio:.2f} (spool drain rates); "
            f"end to end into the core store: {core_ack['rate'] / (n / baseline['stored_s']):.2f}"
        )
        print(
            f"  (c) live, 2,000 summaries/s, no backlog: ack latency p50 {steady['p50']:.1f} ms, "
            f"p99 {steady['p99']:.1f} ms ({steady['acked']:,} acknowledged)"
        )
    finally:
        core.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(core.wait(), 30)
        except TimeoutError:
            core.kill()
            await core.wait()
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 summaries instead of 200,000")
    parser.add_argument("--signing", action="store_true", help="only (c), the signing cost")
    args = parser.parse_args()
    signing_cost()
    if not args.signing:
        asyncio.run(main(args.quick))
