"""What a reload tells the checkpoints, without processes: the live checkpoint interval."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.config.loader import parse_config
from edge_runtime.runtime.revision import site_revision
from edge_runtime.runtime.site import SiteRuntime

PIPELINES = """
[[pipelines]]
type = "windows"
name = "temp"
topics = ["sensors/+/temp"]
decode = { format = "json", key = "topic:1" }
"""


def _site(data_dir: Path, interval_s: float) -> str:
    return (
        f'site_id = "s1"\ndata_dir = "{data_dir}"\n'
        f"[checkpoint]\ninterval_s = {interval_s}\n" + PIPELINES
    )


def test_status_shows_the_interval_a_reload_set(tmp_path: Path) -> None:
    runtime = SiteRuntime(parse_config(_site(tmp_path / "site", 1.0)))
    assert runtime.status()["checkpoint"]["interval_s"] == 1.0
    reloaded = parse_config(_site(tmp_path / "site", 0.25))
    runtime.install(reloaded, runtime.slots, site_revision(reloaded))
    assert runtime.checkpointer is not None
    assert runtime.checkpointer.config.interval_s == 0.25  # what the checkpoint loop waits
    assert runtime.status()["checkpoint"]["interval_s"] == 0.25
