"""``edge-runtime size --calibrate --quick`` runs its stress tests for real (runtime, mosquitto,
model, video) and writes a calibration file that loads back; no figure is asserted beyond
what any machine gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.cli import main
from edge_runtime.sizing import Calibration

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "tests/data/video/vtest_first120.avi"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MosquittoProcess.available(), reason="needs mosquitto"),
]


def test_quick_calibration_writes_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    code = main(
        ["size", "--calibrate", "--quick", "--calibration", str(path), "--video", str(VIDEO)]
    )
    assert code == 0
    cal = Calibration.load(path)
    assert cal.quick
    assert cal.cpu_s_per_msg > 0
    assert cal.base_rss_mb > 0
    assert cal.spool_bytes_per_summary > 0
    assert cal.uplink_bytes_per_summary > 0
    assert [(c.width, c.height, c.model) for c in cal.cameras] == [(640, 480, "fp32")]
    assert cal.cameras[0].cpu_s_per_frame > 0
    assert "fp32" in cal.camera_fixed_rss_mb
