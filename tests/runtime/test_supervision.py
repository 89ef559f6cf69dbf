"""Supervision with real processes: a broker config with a missing or bad CA file is refused
with the field named, and a plugin that raises is counted and isolated while the site goes on.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_runtime.broker import MosquittoProcess, free_port
from tests.runtime.site_process import SiteProcess, feed
from tests.support import Collector, site_toml

PLUGINS = Path(__file__).parent / "failing_plugins"
FLOW = """
[[pipelines]]
type = "windows"
name = "flow"
topics = ["city/flow/+"]
decode = { format = "json", key = "topic:2" }
window = { kind = "tumbling", size_s = 1, allowed_lateness_s = 0, idle_timeout_s = 0.5 }
"""
FAILING = """
[[pipelines]]
type = "failing"
name = "bad"
topics = ["city/bad/+"]
decode = { format = "json", key = "topic:2" }
fail_in = ["process", "on_tick"]

[[pipelines]]
type = "failing"
name = "late"
topics = ["city/late/+"]
decode = { format = "json", key = "topic:2" }
fail_in = ["flush"]
"""


def edge_runtime(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_or_bad_ca_file_is_refused_with_its_field(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "site.toml"
    text = site_toml(site_broker, core_broker, tmp_path / "data", FLOW)
    cfg.write_text(
        text.replace("[uplink.broker]\n", '[uplink.broker]\ntls = { ca_file = "ca.pem" }\n')
    )
    outcomes = {}
    for command in ("check", "run"):
        quiet = ["--quiet"] if command == "run" else []
        done = edge_runtime(command, "-c", str(cfg), *quiet)
        outcomes[command] = (done.returncode, done.stderr.strip().splitlines()[-1])
        assert done.returncode == 2, done.stderr
        assert "[uplink.broker.tls.ca_file]" in done.stderr
        assert f"{tmp_path / 'ca.pem'} does not exist; point ca_file at" in done.stderr
        assert "Traceback" not in done.stderr
    (tmp_path / "ca.pem").write_text("not a certificate\n")  # there, but SSL cannot load it
    checked = edge_runtime("check", "-c", str(cfg))
    ran = edge_runtime("run", "-c", str(cfg), "--quiet")
    outcomes["run, a CA file that is no certificate"] = (
        ran.returncode,
        ran.stderr.strip().splitlines()[-1],
    )
    for what, (code, line) in outcomes.items():
        print(f"\n{what}: exit code {code}: {line}")
    assert checked.returncode == 0
    assert ran.returncode == 2, ran.stderr
    assert "core broker tls.ca_file: cannot load it" in ran.stderr
    assert "Traceback" not in ran.stderr


def _metric(text: bytes, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{label}\}} (\S+)$".encode(), text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_failing_plugin_is_counted_and_isolated_and_the_site_goes_on(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        site_toml(
            site_broker,
            core_broker,
            tmp_path / "data",
            FLOW + FAILING,
            extra=f'plugin_paths = ["{PLUGINS}"]',
        )
        .replace("http_port = 0", f"http_port = {port}")
        .replace("tick_interval_s = 0.2", "tick_interval_s = 0.2\npipeline_error_limit = 10")
    )
    topics = [f"city/flow/k{i}" for i in range(5)] + ["city/bad/b0", "city/late/l0"]
    site = SiteProcess(cfg, port, tmp_path / "site.log")
    stop = asyncio.Event()
    async with Collector(core_broker) as collector:
        site.start()
        try:
            await site.wait_serving()
            feeder = asyncio.create_task(feed(site_broker.port, topics, stop, per_round=0.1))

            async def isolated() -> tuple[bool, dict[str, Any]]:
                status = await site.status()
                return "bad" in status["pipelines_isolated"], status

            at_isolation = await site.until("the failing pipeline isolated", isolated)
            flow_then = sum(e.pipeline == "flow" for e in collector.envelopes)
            code, why = await site.get("/readyz")
            _, metrics = await site.get("/metrics")

            async def going_on() -> tuple[bool, dict[str, Any]]:
                status = await site.status()
                flow_now = sum(e.pipeline == "flow" for e in collector.envelopes)
                set_aside = status["decode_errors"].get("bad:pipeline_isolated", 0)
                return flow_now >= flow_then + 10 and set_aside > 0, status

            later = await site.until("flow summaries after the isolation", going_on)
            stop.set()
            await feeder
            rc = await site.stop()
        finally:
            stop.set()
            site.kill()
        await asyncio.sleep(1.0)  # the summaries flushed at shutdown arrive
    log = site.output()
    errors = {
        call: _metric(metrics, "edge_pipeline_errors_total", call=call, pipeline="bad")
        for call in ("process", "on_tick")
    }
    flow_total = sum(e.pipeline == "flow" for e in collector.envelopes)
    late_total = sum(e.pipeline == "late" for e in collector.envelopes)
    print(
        f"\nfailing plugin: errors of 'bad' at isolation {errors}, isolated: "
        f"{at_isolation['pipelines_isolated']['bad']!r}; /readyz {code} {why.decode().strip()!r}\n"
        f"flow summaries at the core: {flow_then} at the isolation, {flow_total} in all; 'late' "
        f"summaries {late_total}; messages of 'bad' set aside after it: "
        f"{later['decode_errors']['bad:pipeline_isolated']}, failed batches "
        f"{later['decode_errors'].get('bad:plugin_error', 0)}; exit code {rc}"
    )
    assert rc == 0, site.tail()
    assert errors["process"] >= 1 and errors["on_tick"] >= 1
    assert sum(errors.values()) >= 10
    assert _metric(metrics, "edge_pipeline_isolated", pipeline="bad") == 1.0
    assert _metric(metrics, "edge_pipeline_isolated", pipeline="flow") == 0.0
    assert code == 503 and b"pipeline bad isolated" in why
    assert "late" not in at_isolation["pipelines_isolated"]
    assert flow_total > flow_then and late_total > 0
    assert "pipeline late failed in flush" in log  # counted at shutdown, and the exit is clean
    assert "pipeline bad isolated" in log
