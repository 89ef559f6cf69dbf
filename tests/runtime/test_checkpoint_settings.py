"""What a site start and a reload tell the checkpoints, without processes: the start count
kept in the data dir whether checkpoints are on or off (a reload that flushes or starts
pipelines empty counts too), and the live checkpoint interval."""

from __future__ import annotations

import time
from pathlib import Path

from edge_runtime.checkpoint import StartCounter
from edge_runtime.config.loader import parse_config
from edge_runtime.runtime.checkpointing import REEMIT_REVISION_STRIDE, fresh_start
from edge_runtime.runtime.lock import DataDirLock
from edge_runtime.runtime.reload import apply_config
from edge_runtime.runtime.revision import site_revision
from edge_runtime.runtime.site import SiteRuntime
from tests.support import fill_disk, free_bytes, small_disk

PIPELINES = """
[[pipelines]]
type = "windows"
name = "temp"
topics = ["sensors/+/temp"]
decode = { format = "json", key = "topic:1" }
"""


PLUGINS = Path(__file__).parent / "failing_plugins"  # windows-copy: windows, another type


def _site(data_dir: Path, interval_s: float, pipelines: str = PIPELINES) -> str:
    return (
        f'site_id = "s1"\ndata_dir = "{data_dir}"\nplugin_paths = ["{PLUGINS}"]\n'
        f"[checkpoint]\ninterval_s = {interval_s}\n" + pipelines
    )


def test_status_shows_the_interval_a_reload_set(tmp_path: Path) -> None:
    runtime = SiteRuntime(parse_config(_site(tmp_path / "site", 1.0)))
    assert runtime.status()["checkpoint"]["interval_s"] == 1.0
    reloaded = parse_config(_site(tmp_path / "site", 0.25))
    runtime.install(reloaded, runtime.slots, site_revision(reloaded))
    assert runtime.checkpointer is not None
    assert runtime.checkpointer.config.interval_s == 0.25  # what the checkpoint loop waits
    assert runtime.status()["checkpoint"]["interval_s"] == 0.25


def test_each_start_is_counted_durably_and_raises_the_revision_floor(tmp_path: Path) -> None:
    first = fresh_start(tmp_path, 100.0)
    assert (first.part, first.maybe_lost_before, first.reemit_revision) == (1, None, 0)
    second = fresh_start(tmp_path, 200.0)
    assert (second.part, second.maybe_lost_before) == (2, 200.0)
    assert second.reemit_revision == 2 * REEMIT_REVISION_STRIDE
    assert StartCounter(tmp_path).path.read_text(encoding="ascii") == "2\n"


def test_a_data_dir_used_before_starts_were_counted_counts_that_run(tmp_path: Path) -> None:
    """After an upgrade from a release without the start count, the first start is not taken
    for the first run on the data dir: what it emits of windows the earlier run may have
    flushed goes out as another part, not under the ids of that run's results."""
    with DataDirLock(tmp_path) as lock:
        assert not lock.used_before  # a new data dir
    with DataDirLock(tmp_path) as lock:
        assert lock.used_before  # the lock file stays after a stop
        info = fresh_start(tmp_path, 300.0, used_before=lock.used_before)
    assert (info.part, info.maybe_lost_before) == (2, 300.0)
    assert info.reemit_revision == 2 * REEMIT_REVISION_STRIDE
    again = fresh_start(tmp_path, 400.0, used_before=True)  # the count is kept from now on
    assert again.part == 3


def test_a_damaged_start_count_is_set_aside_and_the_clock_numbers_the_start(
    tmp_path: Path,
) -> None:
    counter = StartCounter(tmp_path)
    counter.path.parent.mkdir(parents=True)
    counter.path.write_text("garbage", encoding="ascii")
    before = int(time.time() * 1000)
    n = counter.bump()
    assert n >= before  # above any count a data dir could hold: no earlier run's number
    assert (counter.path.parent / "starts.damaged").read_text(encoding="ascii") == "garbage"
    assert counter.bump() == n + 1  # the count goes on from there


def test_a_start_count_that_cannot_be_saved_is_taken_from_the_clock(tmp_path: Path) -> None:
    """A full disk must not keep a site from starting; the number it takes is one the next
    start, reading the old count, cannot reuse."""
    with small_disk(tmp_path / "data", 64) as data:
        counter = StartCounter(data)
        assert counter.bump() == 1
        fill_disk(data / "filler")
        assert free_bytes(data) == 0
        n = counter.bump()
        assert n > 1000 * 1_700_000_000
        (data / "filler").unlink()
        assert counter.bump() == 2  # the old count, saved again once there is room


async def test_a_reload_counts_a_start_for_each_side_that_needs_part_numbers(
    tmp_path: Path,
) -> None:
    """A reload counts one start for the old instances it flushes and one for the new ones
    that start empty, and none for what it keeps or hands over."""
    data_dir = tmp_path / "site"
    runtime = SiteRuntime(parse_config(_site(data_dir, 1.0)))
    fresh_start(data_dir, 0.0)  # the run's own start
    counter = StartCounter(data_dir)
    humidity = PIPELINES.replace('"temp"', '"hum"').replace("/temp", "/hum")

    async def reload(pipelines: str) -> int:
        await apply_config(runtime, parse_config(_site(data_dir, 1.0, pipelines)))
        return int(counter.path.read_text(encoding="ascii"))

    assert await reload(PIPELINES) == 1  # kept
    assert await reload(PIPELINES + 'window = { stats = ["count"] }\n') == 1  # handed over
    assert await reload(PIPELINES + humidity) == 2  # hum added: starts empty
    assert await reload(humidity) == 3  # temp removed: flushed
    # hum changes type (no handover: flushed, and its successor starts empty), temp added
    copy = humidity.replace('type = "windows"', 'type = "windows-copy"')
    assert await reload(copy + PIPELINES) == 5
