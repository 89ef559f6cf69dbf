"""The core's fleet side against protocol-level site peers (tests/fleet/peers.py) over a real
mosquitto with the registry's passwords and ACL: the operator's commands (publish, rollback,
status) as the CLI runs them, a rollout in two waves, a halted one, a rollback, forged
messages refused and counted, drift causes at each step, and the view after a core restart."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.cli.main import main
from edge_runtime.core import CoreReceiver
from edge_runtime.core.fleet_view import fleet_view
from edge_runtime.fleet import Bundle, bundle_topic, desired_topic, heartbeat_topic
from edge_runtime.identity import CORE_USER, Sealer
from tests.delivery.harness import figures
from tests.fleet.peers import (
    PeerSite,
    core_config,
    poll,
    provisioned,
    running_core,
    secured_broker,
    tamper,
)

SITES = ["site-a", "site-b", "site-c", "site-d", "site-e"]
MANAGED_A = """
[[pipelines]]
type = "windows"
name = "ped"
topics = ["akl/ped/+/count"]
window = { kind = "tumbling", size_s = 1 }
"""
MANAGED_B = MANAGED_A.replace("size_s = 1", "size_s = 2")


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


def fleet_of(core: CoreReceiver) -> dict[str, Any]:
    assert core.fleet is not None
    return fleet_view(core.fleet)


def by_site(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["site"]: row for row in view["sites"]}


def codes(row: dict[str, Any]) -> list[str]:
    return [c["code"] for c in row["causes"]]


def cli(*args: str) -> int:
    return main(list(args))


async def test_rollout_in_waves_halt_rollback_and_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    ids = provisioned(registry, tmp_path, SITES)
    broker = secured_broker(registry)
    managed_a, managed_b = tmp_path / "a.toml", tmp_path / "b.toml"
    managed_a.write_text(MANAGED_A)
    managed_b.write_text(MANAGED_B)
    common = [
        "--group",
        "city",
        "--registry",
        str(registry),
        "--broker",
        f"127.0.0.1:{broker.port}",
    ]
    config = core_config(registry, broker.port, tmp_path / "core.db")
    peers = [PeerSite(ids[s], "city", broker.port) for s in SITES]
    steps: dict[str, object] = {}
    try:
        async with running_core(config) as core, contextlib.AsyncExitStack() as stack:
            for peer in peers:
                await stack.enter_async_context(peer)
            await poll(
                lambda: (
                    states(by_site(fleet_of(core))) == dict.fromkeys(SITES, "unmanaged")
                    and all(p.site in core.fleet.beats for p in peers)
                ),
                "five sites heard, unmanaged",
            )

            # (1) bundle A: the canary (site-a, first by name) takes its time
            peers[0].answer = "applying:"
            assert (
                await asyncio.to_thread(
                    cli, "fleet", "publish", *common, "--config", str(managed_a)
                )
                == 0
            )
            serial_a = peers[0].last_serial or await poll(lambda: peers[0].last_serial, "canary")

            def wave_one() -> bool:
                rows = by_site(fleet_of(core))
                return rows["site-a"]["causes"][0]["text"].startswith("applying") and all(
                    codes(rows[s]) == ["pending_wave"] for s in SITES[1:]
                )

            await poll(wave_one, "wave 1: the canary applying, the rest pending wave 2")
            rows = by_site(fleet_of(core))
            assert rows["site-a"]["causes"][0]["text"] == f"applying bundle {serial_a}"
            assert rows["site-b"]["causes"][0]["text"] == f"pending wave 2 of 2 (bundle {serial_a})"
            assert [p.seen for p in peers[1:]] == [[]] * 4  # nobody else has it
            _, metrics = await get(core.ops.port, "/metrics")
            assert 'edge_fleet_rollout_wave{group="city"} 1.0' in metrics
            assert 'edge_fleet_drift{cause="pending_wave",site="site-b"} 1.0' in metrics
            steps["wave 1"] = states(rows)

            peers[0].answer = "applied:"
            peers[0].retake()
            await poll(lambda: all_in_sync(core, serial_a), "bundle A applied everywhere")
            view = fleet_of(core)
            assert view["groups"]["city"]["rollout"]["outcomes"] == {"applied": 5}
            steps["after A"] = states(by_site(view))

            # (2) forgeries: a bundle not signed by the operator, a heartbeat with a wrong
            # key, a tampered bundle straight to one site (it refuses; still in sync)
            intruder = Sealer(Ed25519PrivateKey.generate(), "operator")
            fake = Bundle("city", serial_a + 10**9, MANAGED_B, "0.1.0").seal(intruder)
            password = (registry / "core-broker-password").read_text()
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username=CORE_USER, password=password
            ) as client:
                await client.publish(bundle_topic("city"), fake, qos=1)
                await client.publish(desired_topic("site-d"), tamper(peers[3].last_good), qos=1)
            thief = Sealer(Ed25519PrivateKey.generate(), "site-c")
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username="site-c", password=peers[2].password
            ) as client:
                await client.publish(heartbeat_topic("site-c"), peers[2].heartbeat(thief), qos=1)
            counters = await poll(
                lambda: (
                    core.fleet.counters
                    if core.fleet.counters["bundle_rejected_bad_signature"]
                    and core.fleet.counters["heartbeat_rejected_bad_signature"]
                    else None
                ),
                "forgeries counted",
            )
            await poll(lambda: peers[3].last_outcome == "refused", "site-d refuses the tampered")
            await poll(
                lambda: (
                    (by_site(fleet_of(core))["site-d"]["reported"] or {}).get("last_outcome")
                    == "refused"
                ),
                "the core sees site-d's refusal",
            )
            rows = by_site(fleet_of(core))
            assert rows["site-d"]["state"] == "in_sync", rows["site-d"]
            assert rows["site-d"]["reported"]["last_reason"] == "bad bundle: bad_signature"
            steps["counters after forgeries"] = dict(counters)

            # (3) bundle B: the canary rolls back, the rollout halts, the rest keep A
            peers[0].answer = "rolled_back:not healthy within 30 s"
            assert (
                await asyncio.to_thread(
                    cli, "fleet", "publish", *common, "--config", str(managed_b)
                )
                == 0
            )
            await poll(
                lambda: fleet_of(core)["groups"]["city"]["rollout"]["state"] == "halted",
                "the rollout of B halts",
            )
            view = fleet_of(core)
            rollout = view["groups"]["city"]["rollout"]
            assert "site-a: rolled_back (not healthy within 30 s)" in rollout["reason"]
            rows = by_site(view)
            assert rows["site-a"]["causes"][0]["text"] == "rolled back: not healthy within 30 s"
            serial_b = rows["site-a"]["desired"]["serial"]
            for site in SITES[1:]:
                assert codes(rows[site]) == ["halted"], rows[site]
                assert rows[site]["state"] == "drift"
                assert "halted before this site" in rows[site]["causes"][0]["text"]
                assert rows[site]["desired"]["serial"] == serial_a
            assert all(serial_b not in p.seen for p in peers[1:])
            steps["B halted"] = states(rows)

            # (4) the operator rolls back: A's content, new serial, all at once
            peers[0].answer = "applied:"
            assert await asyncio.to_thread(cli, "fleet", "rollback", *common) == 0
            await poll(
                lambda: (
                    fleet_of(core)["groups"]["city"]["rollout"]["rollback"]
                    and fleet_of(core)["groups"]["city"]["rollout"]["state"] == "done"
                ),
                "the rollback rolled out",
            )
            view = fleet_of(core)
            serial_r = view["groups"]["city"]["serial"]
            assert serial_r > serial_b and view["groups"]["city"]["rollout"]["waves"] == [1.0]
            await poll(lambda: all_in_sync(core, serial_r), "everyone on the rollback")
            assert view["groups"]["city"]["managed_hash"] == peers[1].managed
            steps["rolled back"] = states(by_site(fleet_of(core)))

            # (5) drift the sites report, and a site gone quiet
            peers[2].drift = ("local config changed (SIGHUP)",)
            peers[2].retake()
            await poll(
                lambda: "site_reported" in codes(by_site(fleet_of(core))["site-c"]),
                "site-c's own drift",
            )
            await stack.aclose()  # all peers stop: their heartbeats grow stale
            await poll(
                lambda: by_site(fleet_of(core))["site-e"]["state"] == "stale",
                "site-e stale",
            )
            _, metrics = await get(core.ops.port, "/metrics")
            assert 'edge_fleet_drift{cause="stale",site="site-e"} 1.0' in metrics
            code, status = await get(core.ops.port, "/status")
            assert code == 200 and '"heartbeat stale for' in status

            capsys.readouterr()
            url = f"http://127.0.0.1:{core.ops.port}"
            assert await asyncio.to_thread(cli, "fleet", "status", "--url", url) == 0
            table = capsys.readouterr().out
            assert f"group city: bundle {serial_r} (rollback) done" in table
            assert "site-c: site reports: local config changed (SIGHUP)" in table

        # (6) a restarted core knows the fleet at once
        async with running_core(config) as core:
            view = fleet_of(core)
            rows = by_site(view)
            assert view["groups"]["city"]["serial"] == serial_r
            assert view["groups"]["city"]["rollout"]["state"] == "done"
            assert {rows[s]["desired"]["serial"] for s in SITES} == {serial_r}
            assert {rows[s]["reported"]["running_serial"] for s in SITES} == {serial_r}
    finally:
        broker.close()
    figures(
        "fleet rollout against five protocol peers",
        **steps,
        table=table,
    )


def all_in_sync(core: CoreReceiver, serial: int) -> bool:
    assert core.fleet is not None
    rows = fleet_of(core)["sites"]
    return len(rows) == len(SITES) and all(
        r["state"] == "in_sync" and r["reported"]["running_serial"] == serial for r in rows
    )


def states(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {site: row["state"] for site, row in rows.items()}
