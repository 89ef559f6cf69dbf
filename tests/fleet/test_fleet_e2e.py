"""The fleet end to end, with real processes: five provisioned site runtimes and a core
receiver (separate ``python -m edge_runtime`` processes), a site mosquitto and a core
mosquitto with the registry's passwords and ACL, the operator's commands as the CLI runs them.

1. a revision (bundle R1: one pipeline added, the running one unchanged) rolled out in two
   waves (a canary, then the other four); the added pipeline's topic is fed only once the
   test has seen wave 1 (the canary applying, waiting to be healthy; the others pending);
2. one site given a bundle with a bad signature refuses it (and keeps running R1);
3. a revision whose new pipeline never sees input (R2) fails health on the canary, which
   rolls back; the rollout halts before the other four;
4. the operator rolls the group back (R1's content, a new serial) to all five at once.

The drift report (``/fleet.json``) is checked at each step. Across it all a publisher feeds
every site the same few readings; at the end no summary a site accepted is missing at the
core or stored twice, and every window of the pipeline that ran throughout is stored once
with exactly the readings the publisher sent into it (no window split by a reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.core.store import SummaryStore
from edge_runtime.fleet import Bundle, desired_topic
from edge_runtime.identity import CORE_USER, Sealer, load_private_key
from tests.delivery.harness import (
    ROOT,
    Proc,
    Processes,
    core_stored,
    figures,
    http_get,
    spool_accepted,
    status,
    wait_ready,
)
from tests.fleet.peers import provisioned, secured_broker, tamper
from tests.support import Background

pytestmark = pytest.mark.slow

SITES = ["site-a", "site-b", "site-c", "site-d", "site-e"]
GROUP = "city"
KEYS = ["k0", "k1", "k2"]
WINDOW_S = 2.0
PERIOD_S = 0.25
INGEST = "[ingest]\nbatch_wait_ms = 5\n"


def window(name: str, topic: str = "city/lanes/+/count", stats: str = '"count", "sum"') -> str:
    return f"""
[[pipelines]]
type = "windows"
name = "{name}"
topics = ["{topic}"]
decode = {{ format = "json", key = "topic:2" }}
window = {{ kind = "tumbling", size_s = {WINDOW_S}, allowed_lateness_s = 0, \
idle_timeout_s = 1, stats = [{stats}] }}
"""


LOCAL = window("lanes")
R1 = INGEST + LOCAL + window("extra", topic="city/extra/+/count", stats='"max"')
R2 = R1 + window("quiet", topic="nobody/publishes/+/here")


def site_toml(site: str, workdir: Path, identity: Path, site_port: int, core_port: int) -> Path:
    path = workdir / f"{site}.toml"
    http_port = free_port()
    path.write_text(
        f"""
site_id = "{site}"
data_dir = "{workdir / site}"

[identity]
dir = "{identity}"

[fleet]
group = "{GROUP}"
heartbeat_interval_s = 0.5

[site_broker]
port = {site_port}
reconnect_min_s = 0.05
reconnect_max_s = 0.5

{INGEST}

[uplink]
delivery = "core"
ack_timeout_s = 3
drain_timeout_s = 20

[uplink.broker]
port = {core_port}
username = "{site}"
password_file = "{identity / "broker-password"}"
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[ops]
http_port = {http_port}
log_format = "text"
tick_interval_s = 0.2
shutdown_timeout_s = 40

{LOCAL}
""",
        encoding="utf-8",
    )
    return path


def core_toml(workdir: Path, registry: Path) -> Path:
    path = workdir / "core.toml"
    path.write_text(
        f"""
registry = "{registry}"

[broker]
username = "{CORE_USER}"
password_file = "{registry / "core-broker-password"}"
reconnect_max_s = 0.5

[fleet]
waves = [0.2, 1.0]
failure_threshold = 0
wave_timeout_s = 90
""",
        encoding="utf-8",
    )
    return path


class Readings(Background):
    """Publishes a reading per key every PERIOD_S (QoS 1, event time now) to the site
    broker, and keeps what it sent: (key, window start) -> readings."""

    task_name = "fleet-e2e-feed"

    def __init__(self, port: int) -> None:
        self.port = port
        self.extra = False
        """also feed city/extra/+/count (the topic of the pipeline R1 adds)"""
        self.sent: Counter[tuple[str, float]] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="fleet-e2e-feed") as client:
            for tick in itertools.count():
                if self._stop.is_set():
                    return
                for key in KEYS:
                    ts = time.time()
                    doc = {"value": float(tick % 7), "ts": ts}
                    await client.publish(f"city/lanes/{key}/count", orjson.dumps(doc), qos=1)
                    self.sent[(key, math.floor(ts / WINDOW_S) * WINDOW_S)] += 1
                    if self.extra:
                        await client.publish(f"city/extra/{key}/count", orjson.dumps(doc), qos=1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), PERIOD_S)


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def fleet_view(core: Proc) -> dict[str, Any]:
    assert core.http_port is not None
    code, body = http_get(core.http_port, "/fleet.json")
    assert code == 200, body
    doc: dict[str, Any] = orjson.loads(body)
    return doc


def rows(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["site"]: row for row in view["sites"]}


def codes(row: dict[str, Any]) -> list[str]:
    return [c["code"] for c in row["causes"]]


async def until(
    core: Proc, procs: list[Proc], check: Any, what: str, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The core's fleet view once ``check(view)`` holds (every process must stay up); each
    view read on the way is appended to ``seen``."""
    deadline = time.monotonic() + 120.0
    view: dict[str, Any] = {}
    while True:
        for proc in [core, *procs]:
            assert proc.running, f"{proc.name} exited:\n{proc.tail()}"
        with contextlib.suppress(OSError, AssertionError):
            view = await asyncio.to_thread(fleet_view, core)
            if seen is not None:
                seen.append(view)
            if check(view):
                return view
        if time.monotonic() > deadline:
            brief = {s: (r["state"], codes(r)) for s, r in rows(view).items()} if view else {}
            raise AssertionError(
                f"never {what}; fleet: {brief}, groups: {view.get('groups')}\n{core.tail(20)}"
            )
        await asyncio.sleep(0.2)


def states(view: dict[str, Any]) -> dict[str, str]:
    return {site: row["state"] for site, row in rows(view).items()}


async def drained(site: Proc) -> dict[str, Any]:
    deadline = time.monotonic() + 120.0
    while True:
        assert site.running, f"{site.name} exited:\n{site.tail()}"
        doc = await asyncio.to_thread(status, site)
        uplink = doc["uplink"]
        if uplink["pending"] == 0 and uplink["appended"] > 0:
            return dict(uplink)
        assert time.monotonic() < deadline, f"{site.name} never drained: {uplink}"
        await asyncio.sleep(0.3)


async def test_five_sites_two_waves_refusal_rollback_no_summary_lost(tmp_path: Path) -> None:
    started = time.monotonic()
    registry = tmp_path / "registry"
    ids = provisioned(registry, tmp_path, SITES)
    operator = Sealer(load_private_key(registry / "operator.key"), "operator")
    core_broker = secured_broker(registry)
    site_broker = MosquittoProcess()
    site_broker.start()
    db = tmp_path / "core.db"
    managed = {name: tmp_path / f"{name}.toml" for name in ("r1", "r2")}
    managed["r1"].write_text(R1)
    managed["r2"].write_text(R2)
    broker_args = ["--registry", str(registry), "--broker", f"127.0.0.1:{core_broker.port}"]
    common = ["--group", GROUP, *broker_args]
    report: dict[str, object] = {}
    try:
        with Processes(tmp_path) as procs:
            core = procs.core(core_broker, db, "-c", str(core_toml(tmp_path, registry)))
            await wait_ready(core)
            sites: dict[str, Proc] = {}
            for site in SITES:
                config = site_toml(site, tmp_path, ids[site], site_broker.port, core_broker.port)
                proc = procs.start(
                    site, ["run", "-c", str(config), "--quiet"], http_port=_port(config)
                )
                sites[site] = proc
            for proc in sites.values():
                await wait_ready(proc, timeout=60)
            every = list(sites.values())
            view = await until(
                core,
                every,
                lambda v: states(v) == dict.fromkeys(SITES, "unmanaged"),
                "five sites heard (unmanaged)",
            )
            report["0 before"] = states(view)

            async with Readings(site_broker.port) as feed:
                await asyncio.sleep(WINDOW_S)  # windows open on every site

                # (1) R1 in two waves: wave 1 holds until the added pipeline gets input
                await asyncio.to_thread(
                    cli, "fleet", "publish", *common, "--config", str(managed["r1"]),
                    "--health-timeout", "60",
                )  # fmt: skip
                view = await until(
                    core,
                    every,
                    lambda v: (
                        (rows(v)["site-a"]["reported"] or {}).get("last_outcome") == "applying"
                        and all(codes(rows(v)[s]) == ["pending_wave"] for s in SITES[1:])
                    ),
                    "wave 1: the canary applying R1, the others pending wave 2",
                )
                r1 = view["groups"][GROUP]["serial"]
                a = rows(view)["site-a"]
                assert a["state"] == "pending" and a["desired"]["serial"] == r1, a
                assert a["causes"][0]["text"] == f"applying bundle {r1}", a
                assert view["groups"][GROUP]["rollout"]["given"] == {"site-a": 1}
                for site in SITES[1:]:
                    row = rows(view)[site]
                    assert row["state"] == "pending" and row["desired"] is None, row
                    assert row["causes"][0]["text"] == f"pending wave 2 of 2 (bundle {r1})"
                report["1 wave 1"] = {s: (r["state"], codes(r)) for s, r in rows(view).items()}
                feed.extra = True
                view = await until(
                    core,
                    every,
                    lambda v: (
                        v["groups"].get(GROUP, {}).get("rollout", {}).get("state") == "done"
                        and set(states(v).values()) == {"in_sync"}
                    ),
                    "R1 rolled out to all five",
                )
                given = view["groups"][GROUP]["rollout"]["given"]
                assert sorted(Counter(given.values()).items()) == [(1, 1), (2, 4)], given
                assert view["groups"][GROUP]["rollout"]["outcomes"] == {"applied": 5}
                assert {r["reported"]["running_serial"] for r in view["sites"]} == {r1}
                report["1 R1 waves"] = given
                report["1 R1 states"] = states(view)

                # (2) a bundle with a bad signature, straight to site-c
                forged = tamper(
                    Bundle(GROUP, r1 + 1, R2, view["groups"][GROUP]["runtime_version"]).seal(
                        operator
                    )
                )
                password = (registry / "core-broker-password").read_text()
                async with aiomqtt.Client(
                    "127.0.0.1", core_broker.port, username=CORE_USER, password=password
                ) as client:
                    await client.publish(desired_topic("site-c"), forged, qos=1, retain=True)
                view = await until(
                    core,
                    every,
                    lambda v: (
                        (rows(v)["site-c"]["reported"] or {}).get("last_outcome") == "refused"
                    ),
                    "site-c refuses the forged bundle",
                )
                c = rows(view)["site-c"]
                assert c["state"] == "in_sync", c
                assert c["reported"]["last_reason"].startswith("bad_signature"), c
                assert c["reported"]["running_serial"] == r1
                report["2 site-c refused"] = c["reported"]["last_reason"][:80]
                report["2 states"] = states(view)

                # (3) R2 fails health on the canary, which rolls back: the rollout halts
                await asyncio.to_thread(
                    cli,
                    "fleet",
                    "publish",
                    *common,
                    "--config",
                    str(managed["r2"]),
                    "--health-timeout",
                    "3",
                )
                view = await until(
                    core,
                    every,
                    lambda v: (
                        v["groups"][GROUP]["rollout"]["state"] == "halted"
                        and codes(rows(v)["site-a"]) == ["rolled_back"]
                    ),
                    "R2 halted after the canary rolled back",
                )
                r2 = view["groups"][GROUP]["serial"]
                a = rows(view)["site-a"]
                assert a["state"] == "drift" and a["desired"]["serial"] == r2
                assert a["reported"]["running_serial"] == r1
                assert "quiet" in a["causes"][0]["text"], a["causes"]
                for site in SITES[1:]:
                    row = rows(view)[site]
                    assert codes(row) == ["halted"], row
                    assert (
                        row["desired"]["serial"] == r1 and row["reported"]["running_serial"] == r1
                    )
                report["3 R2 halt"] = view["groups"][GROUP]["rollout"]["reason"][:120]
                report["3 states"] = states(view)

                # (4) the operator rolls back: R1's content, new serial, all at once
                await asyncio.to_thread(cli, "fleet", "rollback", *common)
                view = await until(
                    core,
                    every,
                    lambda v: (
                        v["groups"][GROUP]["rollout"]["rollback"]
                        and v["groups"][GROUP]["rollout"]["state"] == "done"
                        and set(states(v).values()) == {"in_sync"}
                    ),
                    "the rollback rolled out",
                )
                back = view["groups"][GROUP]
                assert back["serial"] > r2 and back["rollout"]["waves"] == [1.0]
                assert sorted(set(back["rollout"]["given"].values())) == [1]
                assert {r["reported"]["managed_hash"] for r in view["sites"]} == {
                    Bundle(GROUP, 1, R1, "x").managed_hash
                }
                report["4 rolled back"] = states(view)

                await asyncio.sleep(WINDOW_S)
                await feed.stop()
            await stored_everywhere(db, set(feed.sent), [core, *every])  # idle windows close
            uplinks = {site: await drained(proc) for site, proc in sites.items()}
            report["status table"] = "\n" + cli(
                "fleet", "status", "--url", f"http://127.0.0.1:{core.http_port}"
            )
            for proc in sites.values():
                assert proc.terminate() == 0, proc.tail()
            assert core.terminate() == 0, core.tail()
        sent = dict(feed.sent)
        accepted = {site: spool_accepted(tmp_path / site) for site in SITES}
        stored = {site: core_stored(db, site, accepted[site]) for site in SITES}
        store = SummaryStore(db)
        try:
            windows = {site: _lanes_windows(store, site) for site in SITES}
        finally:
            store.close()
    finally:
        core_broker.close()
        site_broker.close()
    readings = sum(sent.values())
    figures(
        "fleet end to end: five site processes, a core process, two mosquittos",
        readings_sent_to_each_site=readings,
        accepted_by_site=accepted,
        stored_rows={s: stored[s].rows for s in SITES},
        missing={s: len(stored[s].missing) for s in SITES},
        stored_twice={s: len(stored[s].stored_twice) for s in SITES},
        lanes_windows_stored={s: sum(n for _, n in windows[s].values()) for s in SITES},
        lanes_windows_sent=len(sent),
        uplink_resent={s: uplinks[s].get("resent") for s in SITES},
        seconds=round(time.monotonic() - started, 1),
        **report,
    )
    for site in SITES:
        assert stored[site].missing == [] and stored[site].stored_twice == [], site
        # each window of the pipeline that ran throughout: stored once, with every reading
        got = {k: count for k, (count, _) in windows[site].items()}
        assert got == {k: float(n) for k, n in sent.items()}, (site, _diff(got, sent))
        assert all(n == 1 for _, n in windows[site].values()), site


async def stored_everywhere(db: Path, windows: set[tuple[str, float]], procs: list[Proc]) -> None:
    """Until the core has a 'lanes' summary of every window the publisher fed, from every
    site (the last ones close on the idle timeout once the feed stops)."""

    def missing() -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            found: dict[str, set[tuple[str, float]]] = {site: set() for site in SITES}
            for site, key, start in conn.execute(
                "SELECT site, key, window_start FROM summaries WHERE pipeline = 'lanes'"
            ):
                found[site].add((key, start))
        return {site: len(windows - got) for site, got in found.items() if windows - got}

    deadline = time.monotonic() + 120.0
    while left := await asyncio.to_thread(missing):
        for proc in procs:
            assert proc.running, f"{proc.name} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"windows never stored: {left}"
        await asyncio.sleep(0.3)


def _port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("http_port"):
            return int(line.split("=")[1])
    raise AssertionError("no http_port")


def _lanes_windows(store: SummaryStore, site: str) -> dict[tuple[str, float], tuple[float, int]]:
    """(key, window start) -> (count, rows) of the 'lanes' pipeline's summaries."""
    out: dict[tuple[str, float], tuple[float, int]] = {}
    for env in store.envelopes(site):
        if env.pipeline != "lanes" or env.kind != "summary":
            continue
        count, n = out.get((env.key, env.window_start), (0.0, 0))
        out[(env.key, env.window_start)] = (count + float(env.stats["count"]), n + 1)
    return out


def _diff(got: dict[Any, float], sent: Counter[tuple[str, float]]) -> dict[Any, Any]:
    keys = set(got) | set(sent)
    return {k: (got.get(k), sent.get(k)) for k in sorted(keys) if got.get(k) != sent.get(k)}
