"""The line `edge-runtime run` prints when a site stops."""

from __future__ import annotations

from collections import Counter

from edge_runtime.cli.main import shutdown_line
from edge_runtime.ops.stats import RuntimeStats


def test_a_camera_site_says_what_happened_to_its_frames() -> None:
    stats = RuntimeStats()
    stats.pipeline_events["cams"] = Counter(
        frames_in=795, frames_inferred=249, frames_skipped=546, windows=3
    )
    stats.summaries_out["cams"] = 6
    line = shutdown_line(stats)
    assert "795 camera frames (249 analysed, 546 skipped as latest-frame-wins)" in line
    assert "6 summaries out" in line


def test_a_sensor_site_does_not_mention_frames() -> None:
    stats = RuntimeStats(messages_in=10)
    stats.readings_in["p"] = 10
    assert shutdown_line(stats) == ("10 messages in, 10 readings, 0 summaries out, 0 decode errors")
