"""Windows across restarts and crashes, with real processes: a persistent site mosquitto, the
site runtime as a subprocess (SIGTERMed or SIGKILLed under load), a core receiver, and a
QoS 1 publisher that logs every reading it got a PUBACK for. Every window the core stores must
equal the publisher's log exactly (count, sum, min, max): no reading lost, none counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import orjson
import pytest

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.types import Envelope
from tests.delivery.harness import (
    SITE_ID,
    Processes,
    SiteFiles,
    core_seqs,
    core_stored,
    figures,
    spool_accepted,
    status,
    stored_envelopes,
    until_windows_closed,
    wait_drained,
    wait_ready,
)
from tests.support import Background

pytestmark = pytest.mark.slow

SIZE_S = 2.0
KEYS = [f"lane-{i:02d}" for i in range(20)]


@pytest.fixture
def persistent_site_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(persistence=True, workdir=tmp_path / "site-broker")
    broker.start()
    yield broker
    broker.close()


def config(
    workdir: Path,
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    *,
    qos: int = 1,
    size_s: float = SIZE_S,
    checkpoints: bool = True,
) -> SiteFiles:
    path, data_dir, http_port = workdir / "site.toml", workdir / "site", free_port()
    path.write_text(
        f"""
site_id = "{SITE_ID}"
data_dir = "{data_dir}"

[site_broker]
port = {site_broker.port}
transport = "gmqtt"
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[checkpoint]
enabled = {str(checkpoints).lower()}
interval_s = 0.5

[ingest]
qos = {qos}
batch_wait_ms = 5

[uplink]
delivery = "core"
ack_timeout_s = 3
drain_timeout_s = 20

[uplink.broker]
port = {core_broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[ops]
http_port = {http_port}
log_format = "text"
tick_interval_s = 0.2
shutdown_timeout_s = 40

[[pipelines]]
type = "windows"
name = "lanes"
topics = ["city/lanes/+/count"]
decode = {{ format = "json", key = "topic:2" }}
window = {{ kind = "tumbling", size_s = {size_s}, allowed_lateness_s = 0, idle_timeout_s = 3, \
stats = ["count", "sum", "min", "max"] }}
""",
        encoding="utf-8",
    )
    return SiteFiles(path, data_dir, http_port)


@dataclass
class Publisher(Background):
    """Publishes one reading per key every ``period_s``; logs those the broker acknowledged
    (QoS 1: after the PUBACK; QoS 0: after the write)."""

    task_name = "lanes-feed"

    port: int
    qos: int = 1
    period_s: float = 0.05
    log: list[tuple[str, float, float]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        rng = random.Random(7)
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="lanes-feed") as client:
            while not self._stop.is_set():
                for key in KEYS:
                    value, ts = float(rng.randint(1, 1000)), time.time()
                    doc = orjson.dumps({"value": value, "ts": ts})
                    await client.publish(f"city/lanes/{key}/count", doc, qos=self.qos)
                    self.log.append((key, ts, value))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.period_s)


def expected(log: list[tuple[str, float, float]], size_s: float) -> dict[tuple[str, float], dict]:
    out: dict[tuple[str, float], list[float]] = defaultdict(list)
    for key, ts, value in log:
        out[(key, math.floor(ts / size_s) * size_s)].append(value)
    return {
        k: {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v)} for k, v in out.items()
    }


@dataclass
class Comparison:
    windows: int
    exact: int
    wrong: list[str]
    missing: list[tuple[str, float]]
    incomplete_flagged: int
    wrong_unflagged: list[str]
    several_revisions: int


def compare(envs: list[Envelope], want: dict[tuple[str, float], dict]) -> Comparison:
    latest: dict[tuple[str, float], Envelope] = {}
    several = 0
    for env in envs:
        k = (env.key, env.window_start)
        if k in latest:
            several += 1
        if k not in latest or env.revision >= latest[k].revision:
            latest[k] = env
    exact = 0
    wrong: list[str] = []
    unflagged: list[str] = []
    flagged = 0
    for k, env in latest.items():
        got = {s: env.stats[s] for s in ("count", "sum", "min", "max")}
        incomplete = bool(env.attrs.get("incomplete"))
        flagged += incomplete
        if got == want.get(k):
            exact += 1
        else:
            line = f"{k}: core {got}, publisher {want.get(k)}"
            wrong.append(line)
            if not incomplete:
                unflagged.append(line)
    missing = sorted(set(want) - set(latest))
    return Comparison(len(latest), exact, wrong, missing, flagged, unflagged, several)


async def cycle_under_load(
    tmp_path: Path,
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    *,
    cycles: int,
    kill: bool,
    qos: int = 1,
    checkpoints: bool = True,
) -> tuple[Comparison, dict[str, object], list[Envelope], dict[tuple[str, float], dict]]:
    """Run the site under load with ``cycles`` restarts (SIGKILL or SIGTERM); return the
    comparison of the latest revisions with the publisher's log, the figures, the envelopes
    stored at the core and the publisher's windows."""
    files = config(tmp_path, site_broker, core_broker, qos=qos, checkpoints=checkpoints)
    db = tmp_path / "core.db"
    rng = random.Random(11)
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db)
        await wait_ready(core)
        site = procs.site(files)
        await wait_ready(site)
        async with Publisher(site_broker.port, qos=qos) as pub:
            await asyncio.sleep(1.5)
            for _ in range(cycles):
                if kill:
                    await asyncio.sleep(rng.uniform(0.3, 1.8))
                    site.kill()
                else:
                    await asyncio.sleep(rng.uniform(0.5, 1.5))
                    assert site.terminate() == 0, site.tail()
                site = procs.site(files)
                await wait_ready(site)
            await asyncio.sleep(1.0)
            await pub.stop()
        want = expected(pub.log, SIZE_S)
        await until_windows_closed(max(k[1] for k in want) + SIZE_S, 3.5)
        uplink = await wait_drained(site)
        site_status = status(site)
        core_status = status(core)["sites"][SITE_ID]  # every summary accounted for by now
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
    envs = stored_envelopes(db, SITE_ID, "lanes")
    accepted = spool_accepted(files.data_dir)
    stored = core_stored(db, SITE_ID, accepted)
    seqs = core_seqs(db, SITE_ID, accepted)
    result = compare(envs, want)
    info: dict[str, object] = {
        "readings published (logged)": len(pub.log),
        "windows expected": len(want),
        "windows at the core": result.windows,
        "exactly equal": result.exact,
        "wrong": len(result.wrong),
        "missing": len(result.missing),
        "flagged incomplete": result.incomplete_flagged,
        "wrong and not flagged": len(result.wrong_unflagged),
        "superseded revisions": result.several_revisions,
        "summaries numbered by the spool": accepted,
        "seqs with no stored summary": len(stored.missing),
        "  of windows emitted again (dups)": seqs.duplicates_only,
        "  of superseded revisions": seqs.superseded_only,
        "seq gaps at the core": len(seqs.missing),
        "missing, core /status (live)": core_status["missing"],
        "missing, core store (rebuilt)": seqs.rebuilt_missing,
        "seqs beyond those numbered": seqs.beyond_accepted,
        "duplicates at the core": core_status["duplicates"],
        "summaries acked by the core": uplink["core_acked"],
        "redeliveries recognised (last run)": site_status["checkpoint"].get(
            "redelivered_dropped", "-"
        ),
    }
    return result, info, envs, want


def assert_no_false_gaps(info: dict[str, object]) -> None:
    """The core reports no summary missing that the site numbered: every number the spool
    handed out reached it (stored, or kept for a duplicate or a superseded revision), and the
    spool skipped none (a kill -9 leaves its database intact)."""
    assert info["seq gaps at the core"] == 0
    assert info["missing, core /status (live)"] == 0
    assert info["missing, core store (rebuilt)"] == 0
    assert info["seqs beyond those numbered"] == 0


async def test_sigterm_restarts_under_load_keep_windows_exact(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    result, info, _, _ = await cycle_under_load(
        tmp_path, persistent_site_broker, core_broker, cycles=20, kill=False
    )
    figures("(a) 20 SIGTERM restarts under load, QoS 1", **info)
    assert result.wrong == []
    assert result.missing == []
    assert result.several_revisions == 0
    assert info["seqs with no stored summary"] == 0  # a clean stop sends nothing twice
    assert_no_false_gaps(info)


async def test_sigkills_under_load_keep_windows_exact(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    result, info, _, _ = await cycle_under_load(
        tmp_path, persistent_site_broker, core_broker, cycles=20, kill=True
    )
    figures("(b) 20 SIGKILLs at random moments under load, QoS 1", **info)
    assert result.wrong == []
    assert result.missing == []
    # windows emitted after the last checkpoint before a kill are emitted again (same id, a
    # new seq): the core drops them as duplicates and counts their seqs as received
    assert_no_false_gaps(info)


async def test_qos0_sigkills_flag_what_may_be_incomplete(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """(c) QoS 0 input, which no broker redelivers: after each kill the windows that may have
    lost input are flagged in their envelope; every window not flagged is exact. Readings sent
    while the site was down are lost for good, so whole windows may be missing (counted)."""
    result, info, _, _ = await cycle_under_load(
        tmp_path, persistent_site_broker, core_broker, cycles=5, kill=True, qos=0
    )
    figures("(c) 5 SIGKILLs at random moments under load, QoS 0", **info)
    assert result.wrong_unflagged == []
    assert result.exact + result.incomplete_flagged >= result.windows
    assert result.incomplete_flagged > 0  # 5 kills under load: some windows lost input
    assert_no_false_gaps(info)


async def test_a_changed_window_size_reports_what_it_dropped(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """(d) A clean restart with another window size: the open windows of the old size no
    longer fit; the restart says what it dropped (log line and /status), flags the new windows
    that miss those readings, and every other window is exact."""
    files = config(tmp_path, persistent_site_broker, core_broker, size_s=SIZE_S)
    db = tmp_path / "core.db"
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db)
        await wait_ready(core)
        site = procs.site(files)
        await wait_ready(site)
        async with Publisher(persistent_site_broker.port) as pub:
            await asyncio.sleep(2.5)
            assert site.terminate() == 0, site.tail()
            stopped, stop_wall = len(pub.log), time.time()
            files = config(tmp_path, persistent_site_broker, core_broker, size_s=2 * SIZE_S)
            site = procs.site(files)
            await wait_ready(site)
            # feed on until a whole 4 s window lies after the stop: the windows that overlap
            # the dropped readings are flagged, so only a later one can show an exact result
            # (how many there are otherwise depends on where the restart falls on the grid)
            clean_end = (math.floor(stop_wall / (2 * SIZE_S)) + 2) * (2 * SIZE_S)
            await asyncio.sleep(max(2.5, clean_end + 0.5 - time.time()))
            await pub.stop()
        after = status(site)["checkpoint"]
        await until_windows_closed(max(ts for _, ts, _ in pub.log) + 2 * SIZE_S, 3.5)
        await wait_drained(site)
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
        log_text = site.log.read_text(encoding="utf-8")
    dropped = after["restore_dropped"]
    assert len(dropped) == 1 and "window geometry changed" in dropped[0], dropped
    assert f"to ['tumbling', {2 * SIZE_S}" in dropped[0]
    assert "checkpoint restore dropped pipeline lanes:" in log_text
    pairs, readings = (int(word) for word in dropped[0].split() if word.isdigit())
    assert pairs > 0 and readings > 0

    envs = stored_envelopes(db, SITE_ID, "lanes")
    old = [e for e in envs if e.window_end - e.window_start == SIZE_S]
    new = [e for e in envs if e.window_end - e.window_start == 2 * SIZE_S]
    before = compare(old, expected(pub.log[:stopped], SIZE_S))
    after_size = compare(new, expected(pub.log, 2 * SIZE_S))
    figures(
        "(d) a clean restart from 2 s to 4 s windows",
        **{
            "dropped (status)": dropped[0],
            "2 s windows at the core": before.windows,
            "2 s windows exact": before.exact,
            "4 s windows at the core": after_size.windows,
            "4 s windows exact": after_size.exact,
            "4 s windows flagged incomplete": after_size.incomplete_flagged,
        },
    )
    # the 2 s windows closed before the stop are exact; the open ones were dropped, not sent
    assert before.wrong == [] and before.windows > 0
    # 4 s windows that miss the dropped readings are flagged; all the others are exact
    assert after_size.wrong_unflagged == [] and after_size.incomplete_flagged > 0
    assert after_size.exact > 0


@dataclass
class Parts:
    """The results at the core grouped by window: a window a restart cut in parts (checkpoints
    off) is stored as several results, one per part, each flagged incomplete."""

    windows: int
    whole: int
    """windows with one result, not flagged, equal to the publisher's log"""
    flagged_whole: int
    """windows with one result, flagged incomplete (a stop cut them, or they started before
    a restart, but all their readings went to one run)"""
    cut: int
    """windows stored in several parts"""
    parts: int
    merged_wrong: list[str]
    """windows whose parts together differ from the publisher's log"""
    unflagged_wrong: list[str]
    """results not flagged incomplete that differ from the publisher's log"""
    unflagged_parts: list[str]
    """results of a window in several parts that are not flagged incomplete"""
    missing: list[tuple[str, float]]


def compare_parts(envs: list[Envelope], want: dict[tuple[str, float], dict]) -> Parts:
    by_window: dict[tuple[str, float], list[Envelope]] = defaultdict(list)
    for env in envs:
        by_window[(env.key, env.window_start)].append(env)
    whole = flagged_whole = cut = parts = 0
    merged_wrong: list[str] = []
    unflagged_wrong: list[str] = []
    unflagged_parts: list[str] = []
    for k, results in by_window.items():
        stats = [{s: env.stats[s] for s in ("count", "sum", "min", "max")} for env in results]
        merged = {
            "count": sum(s["count"] for s in stats),
            "sum": sum(s["sum"] for s in stats),
            "min": min(s["min"] for s in stats),
            "max": max(s["max"] for s in stats),
        }
        if merged != want.get(k):
            merged_wrong.append(f"{k}: parts {stats}, publisher {want.get(k)}")
        for env, got in zip(results, stats, strict=True):
            flagged = bool(env.attrs.get("incomplete"))
            if not flagged and got != want.get(k):
                unflagged_wrong.append(f"{k}: core {got}, publisher {want.get(k)}")
            if len(results) > 1 and not flagged:
                unflagged_parts.append(f"{k}: revision {env.revision}, attrs {env.attrs}")
        if len(results) > 1:
            cut += 1
            parts += len(results)
        elif results[0].attrs.get("incomplete"):
            flagged_whole += 1
        elif stats[0] == want.get(k):
            whole += 1
    missing = sorted(set(want) - set(by_window))
    return Parts(
        len(by_window),
        whole,
        flagged_whole,
        cut,
        parts,
        merged_wrong,
        unflagged_wrong,
        unflagged_parts,
        missing,
    )


async def test_sigterm_restarts_without_checkpoints_keep_every_part(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """(e) Checkpoints off: a clean stop flushes the open windows half-way and the next run
    emits the rest of their readings. Each part is flagged incomplete and numbered by the run
    that emitted it (a new revision, so a new envelope id): the core stores the parts side by
    side, none dropped as a duplicate of another, and together they equal the publisher's
    log. Every window stored whole is exact."""
    _, info, envs, want = await cycle_under_load(
        tmp_path,
        persistent_site_broker,
        core_broker,
        cycles=10,
        kill=False,
        checkpoints=False,
    )
    result = compare_parts(envs, want)
    figures(
        "(e) 10 SIGTERM restarts under load, QoS 1, checkpoints off",
        **{
            "readings published (logged)": info["readings published (logged)"],
            "windows expected": len(want),
            "windows at the core": result.windows,
            "stored whole and exact": result.whole,
            "stored whole, flagged incomplete": result.flagged_whole,
            "stored in parts (cut by a stop)": result.cut,
            "  parts stored": result.parts,
            "parts together not exact": len(result.merged_wrong),
            "wrong and not flagged": len(result.unflagged_wrong),
            "parts not flagged": len(result.unflagged_parts),
            "missing": len(result.missing),
            "duplicates at the core": info["duplicates at the core"],
            "superseded at the core": info["  of superseded revisions"],
            "seq gaps at the core": info["seq gaps at the core"],
        },
    )
    assert result.merged_wrong == []
    assert result.missing == []
    assert result.unflagged_wrong == []
    assert result.unflagged_parts == []
    assert result.cut > 0  # 10 stops under load cut windows open
    assert_no_false_gaps(info)


async def test_switching_checkpoints_off_keeps_the_open_windows(
    persistent_site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """(f) A run with checkpoints on stops cleanly: its open windows are in the checkpoint,
    and the broker was told it has their readings. The next start has checkpoints off: it
    restores those windows once and removes the file, so that the stop after it (which now
    flushes) and the start after that do not count the same readings twice. Every window's
    results together equal the publisher's log."""
    files = config(tmp_path, persistent_site_broker, core_broker, checkpoints=True)
    ckpt = files.data_dir / "checkpoint" / "state.ckpt"
    db = tmp_path / "core.db"
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db)
        await wait_ready(core)
        site = procs.site(files)
        await wait_ready(site)
        async with Publisher(persistent_site_broker.port) as pub:
            await asyncio.sleep(2.5)
            assert site.terminate() == 0, site.tail()
            assert ckpt.exists()  # the open windows went into it, not out as summaries
            files = config(tmp_path, persistent_site_broker, core_broker, checkpoints=False)
            logs = []
            for _ in range(2):  # the first start restores it once; the second must not
                site = procs.site(files)
                await wait_ready(site)
                assert not ckpt.exists()
                await asyncio.sleep(1.5)
                assert site.terminate() == 0, site.tail()
                logs.append(site.log.read_text(encoding="utf-8"))
            site = procs.site(files)
            await wait_ready(site)
            await asyncio.sleep(1.0)
            await pub.stop()
        want = expected(pub.log, SIZE_S)
        await until_windows_closed(max(k[1] for k in want) + SIZE_S, 3.5)
        await wait_drained(site)
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
    envs = stored_envelopes(db, SITE_ID, "lanes")
    result = compare_parts(envs, want)
    figures(
        "(f) checkpoints on, SIGTERM, then two runs with checkpoints off",
        **{
            "readings published (logged)": len(pub.log),
            "windows expected": len(want),
            "windows at the core": result.windows,
            "stored whole and exact": result.whole,
            "stored whole, flagged incomplete": result.flagged_whole,
            "stored in parts (cut by a stop)": result.cut,
            "parts together not exact": len(result.merged_wrong),
            "wrong and not flagged": len(result.unflagged_wrong),
            "missing": len(result.missing),
        },
    )
    restored = "restored the open windows of 1 pipeline(s) from it (lanes)"
    assert restored in logs[0] and "left a checkpoint" not in logs[1]
    assert result.merged_wrong == [], result.merged_wrong[:3]
    assert result.missing == []
    assert result.unflagged_wrong == []
    assert result.unflagged_parts == []
