"""The container drills (run by containers/drill, with the project's virtualenv).

Starts a core and two sites from containers/compose/*.yml with podman-compose, publishes real
readings (the Auckland pedestrian counts) into each site broker, and then

a. SIGKILLs site 1's runtime and lets it come back: 0 accepted summaries lost, windows exact;
b. stops the core for 30 s and brings it back: 0 lost;
c. stops site 2 with ``podman stop``: it checkpoints and exits within its stop timeout;
d. checks that the runtimes run as a non-root user with a read-only root, health checks passing.

Losses are judged where the summaries finally rest, the core's SQLite store: every (sensor,
day) window of the published readings must be there exactly once, with the count and sum of
its readings. Each drill prints its counts; the exit status is 0 only if all hold.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from edge_runtime.cli.feed import feed_akl
from edge_runtime.datasets.akl import iter_readings

HERE = Path(__file__).resolve().parent
COMPOSE = [sys.executable, "-m", "podman_compose"]
DAY, OFFSET, LATENESS = (
    86400,
    39600,
    3600,
)  # the akl-ped pipeline's windows (containers/compose/site/site.toml)
CORE_MQTT, NATS_PORT, CORE_HTTP = 18883, 14222, 9109
RATE = float(os.environ.get("EDGE_DRILL_RATE", "300"))  # readings/s into each site


@dataclass(frozen=True)
class Site:
    site_id: str
    mqtt: int
    ops: int
    directory: Path

    @property
    def project(self) -> str:
        return f"edge-site-{self.site_id}"

    @property
    def runtime(self) -> str:
        return f"{self.project}_runtime_1"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SITE_ID": self.site_id,
            "SITE_DIR": str(self.directory),
            "SITE_OPS_PORT": str(self.ops),
        }


def say(line: str) -> None:
    print(f"drill: {line}", flush=True)


def run(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def compose(file: str, env: dict[str, str], *args: str) -> None:
    run(*COMPOSE, "-f", str(HERE / "compose" / file), *args, env=env)


def tls(directory: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 (an operator brings their own)."""
    directory.mkdir(parents=True)
    ssl = ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        *ssl,
        "-x509",
        "-days",
        "7",
        "-subj",
        "/CN=edge-drill-ca",
        "-keyout",
        str(directory / "ca.key"),
        "-out",
        str(directory / "ca.pem"),
    )
    run(
        *ssl,
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(directory / "server.key"),
        "-out",
        str(directory / "server.csr"),
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(directory / "server.csr"),
        "-CA",
        str(directory / "ca.pem"),
        "-CAkey",
        str(directory / "ca.key"),
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        str(ext),
        "-out",
        str(directory / "server.pem"),
    )


def render(src: Path, dst: Path, swaps: dict[str, str]) -> None:
    text = src.read_text()
    for old, new in swaps.items():
        assert old in text, f"{src} has no {old!r}"
        text = text.replace(old, new)
    dst.write_text(text)


def prepare(work: Path) -> tuple[Path, list[Site]]:
    core = work / "core"
    core.mkdir()
    tls(core / "tls")
    registry = core / "registry"
    sites = [
        Site("akl-drill-1", 11883, 19118, work / "site-1"),
        Site("akl-drill-2", 11884, 19119, work / "site-2"),
    ]
    for site in sites:
        run(
            str(Path(sys.executable).parent / "edge-runtime"),
            "provision",
            site.site_id,
            "--registry",
            str(registry),
            "--out",
            str(site.directory / "identity"),
            "--ca",
            str(core / "tls" / "ca.pem"),
        )
        src = HERE / "compose" / "site"
        render(
            src / "site.toml",
            site.directory / "site.toml",
            {
                'site_id = "akl-queen-st-01"': f'site_id = "{site.site_id}"',
                'client_id = "edge-akl-queen-st-01"': f'client_id = "edge-{site.site_id}"',
                'username = "akl-queen-st-01"': f'username = "{site.site_id}"',
                "port = 1883": f"port = {site.mqtt}",
                "port = 8883": f"port = {CORE_MQTT}",
                "http_port = 9108": f"http_port = {site.ops}",
            },
        )
        render(
            src / "mosquitto.conf",
            site.directory / "mosquitto.conf",
            {"listener 1883": f"listener {site.mqtt}"},
        )
        shutil.copy(src / "acl", site.directory / "acl")
        run("chown", "-R", "10001:10001", str(site.directory / "identity"))
    src = HERE / "compose" / "core"
    render(
        src / "core.toml",
        core / "core.toml",
        {"port = 8883": f"port = {CORE_MQTT}", ":4222": f":{NATS_PORT}"},
    )
    render(
        src / "mosquitto.conf", core / "mosquitto.conf", {"listener 8883": f"listener {CORE_MQTT}"}
    )
    run("chown", "-R", "10001:10001", str(registry))
    run("chown", "-R", "10003:10003", str(registry / "mosquitto"), str(core / "tls"))
    (core / "tls" / "ca.pem").chmod(0o644)
    return core, sites


def core_env(core: Path) -> dict[str, str]:
    return {**os.environ, "CORE_DIR": str(core), "NATS_PORT": str(NATS_PORT)}


def get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (our own localhost)
        return dict(orjson.loads(resp.read()))


def wait_ready(url: str, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2):  # noqa: S310
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {limit:g} s") from None
            time.sleep(1)


Period = tuple[date, date]  # first and last day of the Auckland feed published


def expected(days: list[Period]) -> dict[tuple[str, float], tuple[int, float]]:
    """(sensor, window start) -> (readings with a value, their sum), from the data itself, for
    the windows the published readings close: the last day's windows stay open at the site
    (in its checkpoint) until later readings move event time past their end and lateness."""
    want: dict[tuple[str, float], tuple[int, float]] = {}
    newest = 0.0
    for start, end in days:
        for r in iter_readings(start, end):
            ws = OFFSET + math.floor((r.ts - OFFSET) / DAY) * DAY
            n, s = want.get((r.sensor, ws), (0, 0.0))
            want[(r.sensor, ws)] = (n + (r.value is not None), s + (r.value or 0.0))
            newest = max(newest, r.ts)
    return {w: v for w, v in want.items() if w[1] + DAY + LATENESS <= newest}


def core_db(core_project: str = "edge-core") -> Path:
    mount = run(
        "podman", "volume", "inspect", f"{core_project}_core-data", "--format", "{{.Mountpoint}}"
    ).strip()
    return Path(mount) / "summaries.db"


def judge(site: Site, want: dict[tuple[str, float], tuple[int, float]]) -> dict[str, int]:
    """Windows at the core's store against the windows the readings make."""
    db = sqlite3.connect(f"file:{core_db()}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT key, window_start, kind, doc FROM summaries WHERE site = ? AND "
        "pipeline = 'akl-ped'",
        (site.site_id,),
    ).fetchall()
    seqs = db.execute(
        "SELECT count(DISTINCT seq), max(seq) FROM summaries WHERE site = ?", (site.site_id,)
    ).fetchone()
    db.close()
    got: Counter[tuple[str, float]] = Counter()
    wrong = 0
    for key, ws, kind, doc in rows:
        if kind != "summary":
            continue
        got[(key, ws)] += 1
        stats = orjson.loads(doc)["stats"]
        if (key, ws) not in want:
            continue  # a window of readings after the judged ones (or still open)
        n, s = want[(key, ws)]
        if stats.get("count") != n or abs(float(stats.get("sum") or 0.0) - s) > 1e-6:
            wrong += 1
    return {
        "expected_windows": len(want),
        "stored_windows": len(got),
        "lost": sum(1 for w in want if w not in got),
        "duplicated": sum(n - 1 for n in got.values() if n > 1),
        "wrong_stats": wrong,
        "later_windows": sum(1 for w in got if w not in want),
        "stored_summaries": len(rows),
        "distinct_seqs": seqs[0] or 0,
        "max_seq": seqs[1] or 0,
    }


def site_status(site: Site) -> dict[str, object]:
    doc = get(f"http://127.0.0.1:{site.ops}/status")
    up = doc.get("uplink") or {}
    assert isinstance(up, dict)
    return {
        "appended": up.get("appended"),
        "pending": up.get("pending"),
        "core_acked": up.get("core_acked"),
        "image": (doc.get("image") or {}),
    }


Windows = dict[tuple[str, float], tuple[int, float]]  # (sensor, start) -> (readings, sum)


def settle(
    sites: list[Site], want: dict[Site, Windows], limit: float = 180.0
) -> dict[str, dict[str, int]]:
    """Waits until every expected window is at the core (or the limit), then judges."""
    deadline = time.monotonic() + limit
    while True:
        verdicts = {s.site_id: judge(s, want[s]) for s in sites}
        done = all(v["lost"] == 0 for v in verdicts.values())
        pending = [site_status(s)["pending"] for s in sites if healthy(s)]
        if (done and all(p == 0 for p in pending)) or time.monotonic() > deadline:
            return verdicts
        time.sleep(2)


def healthy(site: Site) -> bool:
    try:
        get(f"http://127.0.0.1:{site.ops}/status")
    except OSError:
        return False
    return True


def publish(sites: list[Site], start: date, end: date) -> None:
    async def both() -> None:
        async with asyncio.TaskGroup() as tg:
            for s in sites:
                tg.create_task(feed_akl("127.0.0.1", s.mqtt, start, end, RATE))

    asyncio.run(both())


def host_pid(container: str) -> int:
    return int(run("podman", "inspect", container, "--format", "{{.State.Pid}}").strip())


def drill_a(site: Site, other: Site, days: tuple[date, date]) -> None:
    say(f"(a) publishing {days[0]}..{days[1]} into both sites; SIGKILL {site.runtime} mid-feed")

    async def feed_and_kill() -> None:
        async with asyncio.TaskGroup() as tg:
            for s in (site, other):
                tg.create_task(feed_akl("127.0.0.1", s.mqtt, days[0], days[1], RATE))
            await asyncio.sleep(4)
            before = site_status(site)
            pid = host_pid(site.runtime)
            # podman 4.3 leaves a container that `podman kill -s KILL` ended down despite
            # its restart policy: the runtime's own process is killed instead, which podman
            # sees as a crash and restarts (what a kernel OOM kill or a segfault looks like)
            os.kill(pid, 9)
            say(
                f"(a) killed pid {pid}; before the kill the site had accepted "
                f"{before['appended']} summaries, {before['pending']} pending"
            )

    asyncio.run(feed_and_kill())
    t0 = time.monotonic()
    restarted = False
    while time.monotonic() - t0 < 60:
        state = run(
            "podman", "inspect", site.runtime, "--format", "{{.State.Status}} {{.RestartCount}}"
        ).split()
        if state and state[0] == "running" and healthy(site):
            restarted = True
            break
        time.sleep(1)
    if not restarted:
        say("(a) podman did not restart the runtime within 60 s: podman start it")
        run("podman", "start", site.runtime)
        wait_ready(f"http://127.0.0.1:{site.ops}", site.runtime)
    restarts = run("podman", "inspect", site.runtime, "--format", "{{.RestartCount}}").strip()
    say(f"(a) runtime back after {time.monotonic() - t0:.1f} s (restarts: {restarts})")


def verdicts_of(drill: str, sites: list[Site], periods: list[Period], failures: list[str]) -> None:
    """Wait until the core has settled, print each site's verdict, note a failure."""
    want = {s: expected(periods) for s in sites}
    verdicts = settle(sites, want)
    for site_id, v in verdicts.items():
        say(f"{drill}: {site_id}: {v}")
    if any(v["lost"] or v["duplicated"] or v["wrong_stats"] for v in verdicts.values()):
        failures.append(drill)


def drill_b(sites: list[Site], cenv: dict[str, str], periods: list[Period]) -> None:
    """(b) The core stopped for 30 s while both sites publish, then started again."""
    say("(b) stopping the core for 30 s while both sites publish")
    compose("core.yml", cenv, "stop")
    periods.append((date(2019, 1, 8), date(2019, 1, 14)))
    t0 = time.monotonic()
    publish(sites, *periods[-1])
    for s in sites:
        say(f"(b) {s.site_id} while the core is away: {site_status(s)}")
    time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    compose("core.yml", cenv, "start")
    wait_ready(f"http://127.0.0.1:{CORE_HTTP}", "the core receiver")


def drill_c(sites: list[Site], periods: list[Period], failures: list[str]) -> None:
    """(c) ``podman stop`` of a site runtime during a feed: a checkpoint and a clean exit
    within the stop timeout; then started again."""
    site = sites[1]
    periods.append((date(2019, 1, 15), date(2019, 1, 21)))
    say(f"(c) podman stop {site.runtime} (stop timeout 30 s) during a feed")

    async def feed_and_stop() -> float:
        async with asyncio.TaskGroup() as tg:
            for s in sites:
                tg.create_task(feed_akl("127.0.0.1", s.mqtt, *periods[-1], RATE))
            await asyncio.sleep(3)
            t = time.monotonic()
            await asyncio.to_thread(run, "podman", "stop", "-t", "30", site.runtime)
            return time.monotonic() - t

    took = asyncio.run(feed_and_stop())
    code = run("podman", "inspect", site.runtime, "--format", "{{.State.ExitCode}}").strip()
    tail = subprocess.run(
        ["podman", "logs", "--tail", "3", site.runtime],
        capture_output=True,
        text=True,
        check=False,
    )
    logs = tail.stdout + tail.stderr
    say(
        f"(c) stopped in {took:.1f} s with exit code {code}; last log line: "
        f"{(logs.strip().splitlines() or [''])[-1][:300]}"
    )
    if took >= 30 or code != "0":
        failures.append("(c) clean stop")
    run("podman", "start", site.runtime)
    wait_ready(f"http://127.0.0.1:{site.ops}", site.runtime)


def drill_d(sites: list[Site], failures: list[str]) -> None:
    """(d) Each runtime and the receiver: not root, a read-only root, health checks pass."""
    for name in [s.runtime for s in sites] + ["edge-core_receiver_1"]:
        user = run("podman", "exec", name, "id", "-u").strip()
        ro = run("podman", "inspect", name, "--format", "{{.HostConfig.ReadonlyRootfs}}").strip()
        write = subprocess.run(
            ["podman", "exec", name, "touch", "/opt/edge-runtime/x"],
            capture_output=True,
            check=False,
        ).returncode
        health = subprocess.run(
            ["podman", "healthcheck", "run", name], capture_output=True, check=False
        ).returncode
        say(
            f"(d) {name}: uid {user}, read-only root {ro} (a write there exit {write}), "
            f"health check {'passed' if health == 0 else 'FAILED'}"
        )
        if user == "0" or ro != "true" or write == 0 or health != 0:
            failures.append(f"(d) {name}")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still cleans up
    work = Path(tempfile.mkdtemp(prefix="edge-drill-"))
    core, sites = prepare(work)
    failures: list[str] = []
    cenv = core_env(core)
    try:
        compose("core.yml", cenv, "up", "-d")
        wait_ready(f"http://127.0.0.1:{CORE_HTTP}", "the core receiver")
        for s in sites:
            compose("site.yml", s.env(), "up", "-d")
        for s in sites:
            wait_ready(f"http://127.0.0.1:{s.ops}", s.runtime)
        say("core and two sites up: " + ", ".join(s.site_id for s in sites))
        for s in sites:
            say(f"{s.site_id} image: {json.dumps(site_status(s)['image'])}")

        periods: list[Period] = [(date(2019, 1, 1), date(2019, 1, 7))]
        drill_a(sites[0], sites[1], periods[0])
        verdicts_of("(a) kill and restart", sites, periods, failures)
        drill_b(sites, cenv, periods)
        verdicts_of("(b) core outage", sites, periods, failures)
        drill_c(sites, periods, failures)
        verdicts_of("(c) windows after the stop", sites, periods, failures)
        drill_d(sites, failures)
    finally:
        if os.environ.get("EDGE_DRILL_KEEP") != "1":
            for s in sites:
                compose("site.yml", s.env(), "down", "-v", "-t", "30")
            compose("core.yml", cenv, "down", "-v", "-t", "30")
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept running; files in {work}")
    say("all drills passed" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
