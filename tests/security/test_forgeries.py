"""Signed uplink with real processes: a provisioned site, a core with the site registry, and
an attacker on the core broker who tries every forgery of the issue. Each is refused and
counted by reason; the site's genuine summaries all arrive; forged acks delete nothing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import aiomqtt
import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.broker import MosquittoProcess
from edge_runtime.identity import Sealer, load_private_key, open_sealed, provision
from edge_runtime.pipelines import Summary
from edge_runtime.uplink import Envelope, decode_envelopes, encode_envelopes
from edge_runtime.uplink.acks import encode_ack
from tests.delivery.harness import (
    SITE_ID,
    Feed,
    Processes,
    core_stored,
    figures,
    http_get,
    site_config,
    spool_accepted,
    status,
    wait_drained,
    wait_ready,
)

OTHER = "other-site"


def forged(site: str, seq: int, count: float = 999_999.0) -> Envelope:
    start = (time.time() // 60 + 5) * 60  # a future window
    return Envelope.wrap(
        Summary("ped", "107-quay-street-0", start, start + 60, {"count": count}),
        site=site,
        seq=seq,
        created_at=time.time(),
        version="x",
        config_hash="x",
    )


async def publish(port: int, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic, payload, qos=1)


async def capture(port: int, topic: str, ready: asyncio.Event) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("no message")


async def test_forgeries_refused_genuine_summaries_all_arrive(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    provision(SITE_ID, registry, tmp_path / "id-site")
    provision(OTHER, registry, tmp_path / "id-other")
    files = site_config(tmp_path, site_broker=site_broker, core_broker=core_broker)
    with files.config.open("a", encoding="utf-8") as f:
        f.write(f'\n[identity]\ndir = "{tmp_path / "id-site"}"\n')
    db = tmp_path / "core.db"
    topic = f"edge/{SITE_ID}/summaries"
    other_key = Sealer(load_private_key(tmp_path / "id-other" / "site.key"), OTHER)
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(registry))
        await wait_ready(core)
        site = procs.site(files)
        await wait_ready(site)
        async with Feed(site_broker.port) as feed:
            ready = asyncio.Event()
            grab = asyncio.create_task(capture(core_broker.port, topic, ready))
            await ready.wait()
            genuine = await asyncio.wait_for(grab, 30)
            sealed = open_sealed(genuine, "uplink")
            port = core_broker.port

            # (1) the captured message altered (a count, a fresh id), its signature kept
            envs = [
                replace(e, id=e.id[::-1], stats={"count": 999_999.0})
                for e in decode_envelopes(sealed.payload)
            ]
            body = msgpack.unpackb(sealed.body, raw=False)
            body["payload"] = encode_envelopes(envs, "msgpack")
            altered = msgpack.packb({"sealed": 1, "body": msgpack.packb(body), "sig": sealed.sig})
            await publish(port, topic, altered)
            # (2) an unknown site with a key of its own
            ghost = Sealer(Ed25519PrivateKey.generate(), "ghost-site")
            env = encode_envelopes([forged("ghost-site", 1)], "msgpack")
            await publish(port, "edge/ghost-site/summaries", ghost.seal("uplink", env))
            # (3) a (stolen) key of another site, summaries in this site's name
            env = encode_envelopes([forged(SITE_ID, 3)], "msgpack")
            await publish(port, topic, other_key.seal("uplink", env))
            # (4) an absurd sequence number, properly signed by its own site
            env = encode_envelopes([forged(OTHER, 10**9)], "msgpack")
            await publish(port, f"edge/{OTHER}/summaries", other_key.seal("uplink", env))
            # (5) the captured message replayed unchanged
            await publish(port, topic, genuine)
            # (6) unsigned summaries for future windows, as on main
            env = encode_envelopes([forged(SITE_ID, s) for s in range(1, 50)], "msgpack")
            await publish(port, topic, env)
            await asyncio.sleep(3)
            first_view = status(core)
            assert core.http_port is not None
            code, metrics = http_get(core.http_port, "/metrics")
            assert code == 200
            assert b'edge_core_events_total{event="rejected_bad_signature"} 1.0' in metrics

            # forged acks while the core is away: nothing may leave the spool
            assert core.terminate() == 0, core.tail()
            await asyncio.sleep(2)
            before = status(site)["uplink"]
            everything = encode_ack(SITE_ID, [(1, 10**7)])
            ack_topic = f"edge/{SITE_ID}/acks"
            await publish(port, ack_topic, everything)  # unsigned
            await publish(port, ack_topic, other_key.seal("ack", everything, site=SITE_ID))
            await asyncio.sleep(2)
            after = status(site)["uplink"]
            assert after["forged_acks"] == 2, after
            assert after["core_acked"] == before["core_acked"], (before, after)
            assert after["pending"] >= before["pending"] > 0, (before, after)

            core = procs.core(core_broker, db, "--registry", str(registry), name="core2")
            await wait_ready(core)
            await asyncio.sleep(2)
            await feed.stop()
        uplink = await wait_drained(site)
        core_view = status(core)
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
    accepted = spool_accepted(files.data_dir)
    stored = core_stored(db, SITE_ID, accepted)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        others = conn.execute("SELECT COUNT(*) FROM summaries WHERE site != ?", (SITE_ID,))
        (foreign,) = others.fetchone()
        (huge,) = conn.execute(
            "SELECT COUNT(*) FROM summaries WHERE doc LIKE '%999999%'"
        ).fetchone()
    rejected = first_view["security"]["rejected"]
    figures(
        "signed uplink: forgeries on the core broker (second core run's counters)",
        accepted_by_site=accepted,
        stored_rows=stored.rows,
        missing=len(stored.missing),
        stored_twice=len(stored.stored_twice),
        foreign_rows=foreign,
        rows_with_999999=huge,
        forged_acks_at_site=uplink["forged_acks"],
        rejected=rejected,
        signed_messages=core_view["security"]["signed_messages"],
    )
    for reason in ("bad_signature", "unknown_site", "wrong_site", "seq_too_far", "replayed"):
        assert rejected[reason] == 1, (reason, rejected)
    assert rejected["unsigned"] == 1, rejected
    assert stored.missing == [] and stored.stored_twice == []
    assert foreign == 0 and huge == 0
    assert uplink["forged_acks"] == 2
