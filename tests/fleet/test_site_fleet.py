"""The site's side of the fleet, with real processes: a real site mosquitto, a real core
broker and core receiver, the site runtime as a subprocess with an identity from
``edge_runtime.identity.provision``, and bundles sealed here with the registry's operator key.

Every outcome is asserted exactly (from /status, the metrics and the signed heartbeats), and
each test prints its figures."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.broker import MosquittoProcess
from edge_runtime.fleet import open_bundle
from edge_runtime.identity import Sealer, load_public_key
from tests.delivery.harness import (
    SITE_ID,
    Processes,
    core_seqs,
    core_stored,
    figures,
    http_get,
    spool_accepted,
    status,
    stored_envelopes,
    until_windows_closed,
    wait_drained,
    wait_ready,
)
from tests.delivery.test_window_checkpoints import (
    Parts,
    Publisher,
    compare,
    compare_parts,
    expected,
)
from tests.fleet.site_harness import (
    LOCAL_PIPELINES,
    Heartbeats,
    bundle,
    fleet_site,
    poll,
    publish_desired,
    window_table,
)

pytestmark = pytest.mark.slow

SIZE_S = 4.0


def _outcome(serial: int, outcome: str):  # type: ignore[no-untyped-def]
    return lambda doc: (
        doc["fleet"]["last_serial"] == serial and doc["fleet"]["last_outcome"] == outcome
    )


def _metric(port: int, line: str) -> float:
    code, body = http_get(port, "/metrics")
    assert code == 200
    for row in body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


async def test_bundle_applied_without_restart_keeps_open_windows_exact(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """A bundle that changes one pipeline (its statistics) and keeps another is applied while
    readings flow: the same process goes on, the windows open across the switch come out
    exact at the core, and every envelope names the revision that produced it."""
    site = fleet_site(tmp_path, site_broker, core_broker)
    db = tmp_path / "core.db"
    # lanes: statistics change (same geometry: its open windows are handed over); raw: same
    new_pipelines = window_table("lanes", stats='"count", "sum", "min", "max", "mean"')
    new_pipelines += window_table("raw")
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(site.registry))
        await wait_ready(core)
        proc = procs.site(site.files)
        await wait_ready(proc)
        pid = proc.popen.pid
        before = status(proc)["fleet"]
        async with Heartbeats(core_broker.port, site.registry) as beats:
            await beats.wait_for(lambda b: b.revision_id == before["revision"]["id"], "at start")
            async with Publisher(site_broker.port) as pub:
                await asyncio.sleep(SIZE_S + 2)  # windows open and close before the bundle
                wanted = bundle(new_pipelines)
                sent_at = time.time()
                await publish_desired(core_broker.port, wanted.seal(site.operator))
                after = await poll(proc, _outcome(wanted.serial, "applied"), "applied")
                applied_at = time.time()
                await asyncio.sleep(SIZE_S + 2)
                await pub.stop()
            beat = await beats.wait_for(
                lambda b: b.running_serial == wanted.serial, "naming the bundle"
            )
        want = expected(pub.log, SIZE_S)
        await until_windows_closed(max(k[1] for k in want) + SIZE_S, 4.0)
        uplink = await wait_drained(proc)
        assert proc.running and proc.popen.pid == pid, "the site restarted"
        assert proc.terminate() == 0, proc.tail()
        assert core.terminate() == 0, core.tail()
    fleet = after["fleet"]
    handover = fleet["last_reload"]["handover"]
    assert fleet["running_serial"] == wanted.serial
    assert fleet["managed_hash"] == wanted.managed_hash
    assert handover["kept"] == ["raw"]
    assert handover["changed"] == ["lanes"]
    assert handover["added"] == handover["removed"] == []
    assert handover["flushed"] == {}
    # the statistics changed, the geometry did not: nothing of the open windows is lost
    assert [line.split(": ", 1)[1].startswith("nothing:") for line in handover["dropped"]] == [True]
    assert fleet["revision"]["id"] != before["revision"]["id"]
    assert fleet["revision"]["plugins"] == {"windows": fleet["revision"]["plugins"]["windows"]}
    assert beat.revision_id == fleet["revision"]["id"]
    assert beat.managed_hash == wanted.managed_hash
    assert beat.last_outcome == "applied"
    assert beat.group == "city-centre"

    envs = stored_envelopes(db, SITE_ID)
    stored = core_stored(db, SITE_ID, spool_accepted(site.files.data_dir))
    results = {
        name: compare([e for e in envs if e.pipeline == name], want) for name in ("lanes", "raw")
    }
    spanning = {
        k for k in want if k[1] < applied_at and k[1] + SIZE_S > sent_at
    }  # windows open while the bundle was applied
    revisions = {e.site_revision for e in envs}
    figures(
        "bundle applied without a restart, readings flowing",
        **{
            "readings published (logged)": len(pub.log),
            "windows expected per pipeline": len(want),
            "windows spanning the reload": len(spanning),
            "lanes (changed): exact / wrong / missing": (
                f"{results['lanes'].exact} / {len(results['lanes'].wrong)} / "
                f"{len(results['lanes'].missing)}"
            ),
            "raw (kept): exact / wrong / missing": (
                f"{results['raw'].exact} / {len(results['raw'].wrong)} / "
                f"{len(results['raw'].missing)}"
            ),
            "revisions in envelopes": len(revisions),
            "seq gaps at the core": len(stored.missing),
            "summaries acked by the core": uplink["core_acked"],
            "heartbeats received": len(beats.beats),
        },
    )
    assert spanning
    for result in results.values():
        assert result.wrong == []
        assert result.missing == []
        assert result.several_revisions == 0
        assert result.windows == len(want)
    assert stored.missing == [] and stored.stored_twice == []
    assert revisions == {before["revision"]["id"], fleet["revision"]["id"]}
    # a summary of the changed pipeline emitted after the switch has the new statistic
    assert any("mean" in e.stats for e in envs if e.pipeline == "lanes")


async def test_bad_bundles_are_refused_and_the_site_runs_on(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """A bad signature, a bad config, another runtime version, another group and a replayed
    older serial: each refused with its reason, reported at once, the revision unchanged."""
    site = fleet_site(tmp_path, site_broker, core_broker)
    db = tmp_path / "core.db"
    forger = Sealer(Ed25519PrivateKey.generate(), "operator")
    good = window_table("lanes") + window_table("raw") + window_table("more")
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(site.registry))
        await wait_ready(core)
        proc = procs.site(site.files)
        await wait_ready(proc)
        start = status(proc)["fleet"]
        port = proc.http_port
        assert port is not None
        seen: list[tuple[str, str]] = []
        async with Heartbeats(core_broker.port, site.registry) as beats:
            cases = [
                ("bad_signature", bundle(good), forger),
                ("bad_config", bundle(window_table("lanes", size_s=-1)), site.operator),
                (
                    "bad_config",
                    bundle('[[pipelines]]\ntype = "nope"\nname = "x"\ntopics = ["a/b"]\n'),
                    site.operator,
                ),
                ("bad_config", bundle("[site_broker]\nport = 1\n" + good), site.operator),
                ("runtime_version", bundle(good, runtime_version="0.0.1"), site.operator),
                ("wrong_group", bundle(good, group="harbour"), site.operator),
                ("model_missing", bundle(good, models={"det.onnx": "00" * 32}), site.operator),
            ]
            newest = 0
            for reason, wanted, key in cases:
                payload = wanted.seal(key)
                await publish_desired(core_broker.port, payload)
                serial = wanted.serial if key is site.operator else newest
                doc = await poll(
                    proc,
                    lambda d, r=reason, s=serial: (  # type: ignore[misc]
                        d["fleet"]["last_outcome"] == "refused"
                        and d["fleet"]["last_reason"].startswith(r + ":")
                        and d["fleet"]["last_serial"] == s
                    ),
                    f"refused ({reason})",
                )
                newest = doc["fleet"]["last_serial"]
                seen.append((reason, doc["fleet"]["last_reason"]))
                beat = await beats.wait_for(
                    lambda b, r=reason: (  # type: ignore[misc]
                        b.last_outcome == "refused" and b.last_reason.startswith(r + ":")
                    ),
                    f"refused ({reason})",
                )
                assert beat.running_serial == 0
                assert beat.revision_id == start["revision"]["id"]
            # an older serial, properly signed: a replay or a downgrade
            stale = bundle(good, serial=newest - 1)
            await publish_desired(core_broker.port, stale.seal(site.operator))
            doc = await poll(
                proc,
                lambda d: d["fleet"]["last_reason"].startswith("stale_serial:"),
                "refused (stale_serial)",
            )
            seen.append(("stale_serial", doc["fleet"]["last_reason"]))
        refused = _metric(port, 'edge_reloads_total{outcome="refused",source="bundle"}')
        end = status(proc)
        assert proc.terminate() == 0, proc.tail()
        assert core.terminate() == 0, core.tail()
    figures(
        "bad bundles refused",
        **{f"{i}. {r}": why[:100] for i, (r, why) in enumerate(seen, 1)},
        refused_metric=refused,
    )
    assert [r for r, _ in seen] == [c[0] for c in cases] + ["stale_serial"]
    assert refused == len(seen)
    assert end["fleet"]["running_serial"] == 0
    assert end["fleet"]["revision"]["id"] == start["revision"]["id"]
    assert end["fleet"]["last_serial"] == newest  # the stale one never counts as seen
    assert sorted(end["pipelines"]) == ["lanes", "raw"]
    assert end["ready"] is True


async def test_bundles_that_fail_health_roll_back(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """A bundle adding a plugin that fails every batch (isolated), and one adding a pipeline
    whose topic never sees a message: each applied, found unhealthy, rolled back to the
    revision before, the kept pipelines' windows untouched."""
    site = fleet_site(tmp_path, site_broker, core_broker)
    db = tmp_path / "core.db"
    failing = (
        LOCAL_PIPELINES
        + """
[[pipelines]]
type = "failing"
name = "broken"
topics = ["city/lanes/+/count"]
decode = { format = "json", key = "topic:2" }
fail_in = ["process"]
"""
    )
    silent = LOCAL_PIPELINES + window_table("quiet", topic="nobody/publishes/+/here")
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(site.registry))
        await wait_ready(core)
        proc = procs.site(site.files)
        await wait_ready(proc)
        pid = proc.popen.pid
        start = status(proc)["fleet"]
        async with Publisher(site_broker.port):
            first = bundle(failing, health_timeout_s=60)
            await publish_desired(core_broker.port, first.seal(site.operator))
            one = await poll(proc, _outcome(first.serial, "rolled_back"), "rolled back (1)")
            second = bundle(silent, health_timeout_s=3)
            await publish_desired(core_broker.port, second.seal(site.operator))
            two = await poll(proc, _outcome(second.serial, "rolled_back"), "rolled back (2)")
            await asyncio.sleep(1.0)
            end = status(proc)
            assert end["ready"] is True, end
        assert proc.popen.pid == pid
        assert proc.terminate() == 0, proc.tail()
        assert core.terminate() == 0, core.tail()
    figures(
        "bundles failing health rolled back",
        failing_plugin=one["fleet"]["last_reason"][:110],
        silent_topic=two["fleet"]["last_reason"][:110],
        reloads=end["fleet"]["reloads"],
    )
    assert "pipeline broken isolated" in one["fleet"]["last_reason"]
    assert "no input taken by quiet" in two["fleet"]["last_reason"]
    for doc in (one, two):
        fleet = doc["fleet"]
        assert fleet["running_serial"] == 0
        assert fleet["revision"]["id"] == start["revision"]["id"]
        assert fleet["last_reload"]["rollback"]["removed"] in (["broken"], ["quiet"])
        assert fleet["last_reload"]["rollback"]["kept"] == ["lanes", "raw"]
    assert end["fleet"]["reloads"] == {"bundle:rolled_back": 2}
    assert sorted(end["pipelines"]) == ["lanes", "raw"]
    assert end["pipelines_isolated"] == {}


async def test_sighup_reload_drift_and_restart_with_the_persisted_bundle(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """SIGHUP applies an edited config file without a restart and refuses a broken one; under
    a bundle, a local edit of the managed tables is reported as drift (the bundle's tables go
    on running); a restarted site runs the persisted bundle and serial."""
    site = fleet_site(tmp_path, site_broker, core_broker)
    db = tmp_path / "core.db"
    ports = {"core_port": core_broker.port, "site_port": site_broker.port}
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(site.registry))
        await wait_ready(core)
        proc = procs.site(site.files)
        await wait_ready(proc)
        pid = proc.popen.pid
        async with (
            Publisher(site_broker.port),
            Heartbeats(core_broker.port, site.registry) as beats,
        ):
            # (1) a local edit: a third pipeline
            site.write_config(LOCAL_PIPELINES + window_table("extra"), **ports)
            os.kill(pid, signal.SIGHUP)
            hup = await poll(
                proc,
                lambda d: d["fleet"]["last_reload"].get("outcome") == "applied",
                "SIGHUP applied",
            )
            # (2) a broken file: refused, the site runs on
            site.files.config.write_text("site_id = [\n", encoding="utf-8")
            os.kill(pid, signal.SIGHUP)
            broken = await poll(
                proc,
                lambda d: d["fleet"]["last_reload"].get("outcome") == "refused",
                "SIGHUP refused",
            )
            # (3) a bundle, then a local edit of the managed tables: drift
            site.write_config(LOCAL_PIPELINES + window_table("extra"), **ports)
            wanted = bundle(window_table("lanes") + window_table("raw", size_s=2.0))
            await publish_desired(core_broker.port, wanted.seal(site.operator))
            applied = await poll(proc, _outcome(wanted.serial, "applied"), "applied")
            site.write_config(LOCAL_PIPELINES + window_table("local-only"), **ports)
            os.kill(pid, signal.SIGHUP)
            drift = await poll(proc, lambda d: bool(d["fleet"]["drift"]), "drift")
            beat = await beats.wait_for(lambda b: bool(b.drift), "with drift")
        assert proc.popen.pid == pid
        assert proc.terminate() == 0, proc.tail()
        # (4) a restart: the persisted bundle runs, with its serial; drift still reported
        proc = procs.site(site.files)
        await wait_ready(proc)
        restarted = await poll(
            proc, lambda d: d["fleet"]["running_serial"] == wanted.serial, "the bundle again"
        )
        await asyncio.sleep(2.0)  # the retained bundle arrives again: seen, ignored
        again = status(proc)
        assert proc.terminate() == 0, proc.tail()
        assert core.terminate() == 0, core.tail()
    figures(
        "SIGHUP, drift, restart",
        sighup_applied=hup["fleet"]["last_reload"]["handover"],
        sighup_refused=broken["fleet"]["last_reload"]["reason"][:100],
        drift=drift["fleet"]["drift"],
        after_restart=(restarted["fleet"]["running_serial"], restarted["fleet"]["revision"]["id"]),
    )
    assert hup["fleet"]["last_reload"]["source"] == "sighup"
    assert hup["fleet"]["last_reload"]["handover"]["added"] == ["extra"]
    assert hup["fleet"]["last_reload"]["handover"]["kept"] == ["lanes", "raw"]
    assert sorted(hup["pipelines"]) == ["extra", "lanes", "raw"]
    assert broken["fleet"]["last_reload"]["reason"].startswith("bad_config:")
    assert broken["fleet"]["revision"]["id"] == hup["fleet"]["revision"]["id"]
    handover = applied["fleet"]["last_reload"]["handover"]
    assert (handover["kept"], handover["changed"], handover["removed"]) == (
        ["lanes"],
        ["raw"],
        ["extra"],
    )
    assert list(handover["flushed"]) == ["extra"]  # removed: its open windows went out
    # raw's windows changed size: its open windows cannot be handed over, and it says so
    assert len(handover["dropped"]) == 1
    assert "window geometry changed" in handover["dropped"][0]
    assert drift["fleet"]["last_reload"]["outcome"] == "unchanged"
    assert drift["fleet"]["revision"]["id"] == applied["fleet"]["revision"]["id"]
    assert sorted(drift["pipelines"]) == ["lanes", "raw"]
    [cause] = drift["fleet"]["drift"]
    assert cause.startswith("local_config:") and "pipelines" in cause
    assert list(beat.drift) == [cause]
    assert beat.running_serial == wanted.serial
    assert restarted["fleet"]["revision"]["id"] == applied["fleet"]["revision"]["id"]
    assert restarted["fleet"]["last_outcome"] == "applied"
    assert restarted["fleet"]["drift"] == [cause]
    assert again["fleet"]["reloads"] == {"startup:applied": 1}
    persisted = (site.files.data_dir / "fleet" / "bundle.sealed").read_bytes()
    opened = open_bundle(persisted, load_public_key(site.registry / "operator.pub"))
    assert (opened.serial, opened.config) == (wanted.serial, wanted.config)


async def _until_mid_window() -> None:
    """Sleep until the middle of a window that starts after now: the readings before it
    fill the window half-way, those after it the other half."""
    now = time.time()
    await asyncio.sleep((math.floor(now / SIZE_S) + 1.5) * SIZE_S - now)


@pytest.mark.parametrize("checkpoints", [True, False], ids=["checkpoints", "no-checkpoints"])
async def test_sighup_reloads_that_flush_keep_every_part(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path, checkpoints: bool
) -> None:
    """Two SIGHUP reloads in the middle of windows while readings flow: (1) ``lanes`` changes
    its plugin type (no handover: the old instance is flushed, the new one starts empty) and
    ``raw`` is removed; (2) ``lanes`` changes type back and ``raw`` is added again. The old and
    the new instance each emit a part of the windows open across a reload, under part numbers
    of their own: the core stores the parts side by side (none dropped as a duplicate), and
    for ``lanes`` they add up to the publisher's log. ``raw`` misses what was published while
    it was removed: those windows are missing or flagged, every other one is exact."""
    site = fleet_site(tmp_path, site_broker, core_broker, checkpoints=checkpoints)
    db = tmp_path / "core.db"
    ports = {"core_port": core_broker.port, "site_port": site_broker.port}
    steps = [
        window_table("lanes", plugin="windows-copy"),
        window_table("lanes") + window_table("raw"),
    ]
    handovers: list[dict[str, Any]] = []
    signalled: list[float] = []
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db, "--registry", str(site.registry))
        await wait_ready(core)
        proc = procs.site(site.files)
        await wait_ready(proc)
        async with Publisher(site_broker.port) as pub:
            for n, pipelines in enumerate(steps, 1):
                await _until_mid_window()
                site.write_config(pipelines, **ports)
                sent_at = time.time()
                os.kill(proc.popen.pid, signal.SIGHUP)
                doc = await poll(
                    proc,
                    lambda d, n=n: d["fleet"]["reloads"].get("sighup:applied") == n,
                    f"SIGHUP {n} applied",
                )
                handovers.append(doc["fleet"]["last_reload"]["handover"])
                signalled.append(sent_at)
            readded_at = time.time()
            # feed on until a whole window lies after the last reload
            clean_end = (math.floor(readded_at / SIZE_S) + 2) * SIZE_S
            await asyncio.sleep(clean_end + 0.5 - time.time())
            await pub.stop()
        want = expected(pub.log, SIZE_S)
        await until_windows_closed(max(k[1] for k in want) + SIZE_S, 4.0)
        await wait_drained(proc)
        core_status = status(core)["sites"][SITE_ID]
        assert proc.terminate() == 0, proc.tail()
        assert core.terminate() == 0, core.tail()
    envs = stored_envelopes(db, SITE_ID)
    accepted = spool_accepted(site.files.data_dir)
    seqs = core_seqs(db, SITE_ID, accepted)
    lanes = compare_parts([e for e in envs if e.pipeline == "lanes"], want)
    # raw took no input between the two reloads: the windows that overlap that time miss
    # readings (flagged, or not stored at all); every other window is exact
    gap = {k for k in want if k[1] < readded_at and k[1] + SIZE_S > signalled[0]}
    raw_envs = [e for e in envs if e.pipeline == "raw"]
    raw = compare_parts(raw_envs, want)
    raw_outside = compare_parts(
        [e for e in raw_envs if (e.key, e.window_start) not in gap],
        {k: v for k, v in want.items() if k not in gap},
    )

    def parts(result: Parts) -> str:
        return (
            f"{result.windows} windows: {result.whole} whole, {result.flagged_whole} flagged "
            f"whole, {result.cut} in {result.parts} parts; {len(result.merged_wrong)} not "
            f"exact, {len(result.unflagged_wrong)} wrong and not flagged, "
            f"{len(result.unflagged_parts)} parts not flagged, {len(result.missing)} missing"
        )

    figures(
        f"two SIGHUP reloads that flush, readings flowing, checkpoints {checkpoints}",
        **{
            "readings published (logged)": len(pub.log),
            "windows expected per pipeline": len(want),
            "flushed at reload (1), (2)": f"{handovers[0]['flushed']}, {handovers[1]['flushed']}",
            "lanes (type changed twice)": parts(lanes),
            "raw (removed, added again)": parts(raw),
            "raw windows while removed": len(gap),
            "raw outside them": parts(raw_outside),
            "summaries numbered by the spool": accepted,
            "dropped as duplicates of another": seqs.duplicates_only,
            "duplicates at the core (status)": core_status["duplicates"],
            "superseded at the core": seqs.superseded_only,
            "seq gaps at the core": len(seqs.missing),
        },
    )
    first, second = handovers
    assert (first["changed"], first["removed"]) == (["lanes"], ["raw"])
    assert (second["changed"], second["added"]) == (["lanes"], ["raw"])
    assert first["flushed"]["lanes"] > 0 and first["flushed"]["raw"] > 0
    assert second["flushed"]["lanes"] > 0
    # lanes: every window exact, whole or as parts that add up; parts flagged
    assert lanes.merged_wrong == []
    assert lanes.missing == []
    assert lanes.unflagged_wrong == []
    assert lanes.unflagged_parts == []
    assert lanes.cut > 0  # a reload in the middle of a window cut it
    # raw: what misses readings is flagged; outside the time it was removed, all exact
    assert raw.unflagged_wrong == []
    assert raw.unflagged_parts == []
    assert raw_outside.merged_wrong == []
    assert raw_outside.missing == []
    # no result was dropped as a duplicate of another, no number is missing at the core
    assert seqs.duplicates_only == 0
    assert seqs.missing == []
    assert core_status["missing"] == 0
