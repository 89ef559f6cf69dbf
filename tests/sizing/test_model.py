"""The sizing arithmetic against figures worked out by hand (no measurement, no timing)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError
from edge_runtime.sizing import (
    Calibration,
    CameraCost,
    CameraGroup,
    SensorGroup,
    SiteProfile,
    camera_cost,
    load_profile,
    size_site,
)

ROOT = Path(__file__).resolve().parents[2]


def calibration(**changes: object) -> Calibration:
    base: dict[str, object] = {
        "created_at": 1.7e9,
        "host": "test",
        "cpus": 2,
        "quick": True,
        "idle_cores": 0.01,
        "base_rss_mb": 70.0,
        "cpu_s_per_msg": 20e-6,
        "cpu_s_per_extra_reading": 2e-6,
        "cpu_s_per_extra_pipeline_msg": 5e-6,
        "cpu_s_per_summary": 100e-6,
        "broker_cpu_s_per_msg": 10e-6,
        "broker_cpu_s_per_frame": 200e-6,
        "rss_mb_per_key": 0.001,
        "bytes_per_buffered_reading": 24.0,
        "camera_fixed_rss_mb": {"fp32": 120.0},
        "cameras": [
            CameraCost(
                width=640,
                height=480,
                model="fp32",
                cpu_s_per_frame=0.030,
                rss_mb_per_camera=20.0,
                fps_measured=6.0,
            ),
            CameraCost(
                width=1280,
                height=960,
                model="fp32",
                cpu_s_per_frame=0.060,
                rss_mb_per_camera=50.0,
                fps_measured=6.0,
            ),
        ],
        "spool_bytes_per_summary": 500.0,
        "spool_bytes_per_compacted_summary": 520.0,
        "uplink_bytes_per_summary": 400.0,
    }
    return Calibration.model_validate(base | changes)


def test_sensor_group_rates() -> None:
    g = SensorGroup(name="air", count=2000, msg_per_s=1.0, window_s=60)
    assert g.msgs_per_s == 2000
    assert g.keys == 2000
    assert g.summaries_per_s == pytest.approx(2000 / 60)
    slow = SensorGroup(name="slow", count=100, msg_per_s=0.01, window_s=60)
    # one reading every 100 s: only 60 % of the 60-s windows hold one
    assert slow.summaries_per_s == pytest.approx(100 * 0.6 / 60)
    pack = SensorGroup(
        name="p",
        count=10,
        msg_per_s=2,
        format="senml",
        readings_per_msg=4,
        keys_per_sensor=4,
        window_s=10,
        pipelines=2,
    )
    assert pack.readings_per_s == 80
    assert pack.keys == 40
    assert pack.summaries_per_s == pytest.approx(40 / 10 * 2)


def test_sensor_arithmetic() -> None:
    profile = SiteProfile(
        name="s",
        headroom=0.5,
        outage_h=2,
        drain_h=1,
        sensors=[SensorGroup(name="air", count=2000, msg_per_s=1.0, window_s=60)],
    )
    a = size_site(profile, calibration())
    summaries = 2000 / 60
    cores = 0.01 + 2000 * 20e-6 + summaries * 100e-6
    assert a.runtime_cores == pytest.approx(cores)
    assert a.broker_cores == pytest.approx(2000 * 10e-6)
    held = 2000 * 60 * 24 / 2**20
    assert a.memory_mb == pytest.approx(70 + 2000 * 0.001 + held)
    assert a.cores_needed == math.ceil((cores + 0.02) * 1.5)
    assert a.memory_needed_mb == pytest.approx(a.memory_mb * 1.5)
    backlog = summaries * 2 * 3600
    assert a.spool_bytes_full == pytest.approx(backlog * 500)
    assert a.spool_disk_needed_bytes == pytest.approx(backlog * 500 * 1.5)
    # compaction keeps one summary per key and hour: 2 hours
    assert a.spool_bytes_compacted == pytest.approx(2000 * 2 * 520)
    assert a.uplink_live_bps == pytest.approx(summaries * 400 * 8)
    assert a.uplink_drain_bps == pytest.approx(backlog * 400 * 8 / 3600)
    assert a.uplink_needed_bps == pytest.approx((a.uplink_live_bps + a.uplink_drain_bps) * 1.5)


def test_senml_and_pipelines_arithmetic() -> None:
    g = SensorGroup(
        name="env",
        count=100,
        msg_per_s=1,
        format="senml",
        readings_per_msg=5,
        keys_per_sensor=5,
        window_s=3600,
        pipelines=2,
    )
    a = size_site(SiteProfile(sensors=[g]), calibration())
    msgs = 100.0
    expected = (
        0.01
        + msgs * 20e-6
        + msgs * 1 * 5e-6  # one further pipeline
        + msgs * 4 * 2 * 2e-6  # four extra readings a pack, in each of two pipelines
        + g.summaries_per_s * 100e-6
    )
    assert a.runtime_cores == pytest.approx(expected)


def test_camera_arithmetic_and_costs() -> None:
    cal = calibration()
    cams = CameraGroup(name="c", count=2, width=640, height=480, fps=5)
    a = size_site(SiteProfile(cameras=[cams], outage_h=0), cal)
    assert a.runtime_cores == pytest.approx(0.01 + 10 * 0.030)
    assert a.broker_cores == pytest.approx(10 * 200e-6)
    assert a.memory_mb == pytest.approx(70 + 120 + 2 * 20)
    assert a.spool_bytes_full == 0
    mid = camera_cost(cal, CameraGroup(name="m", count=1, width=960, height=720, fps=1))
    # straight line in pixels through (307,200 px, 30 ms) and (1,228,800 px, 60 ms)
    px = 960 * 720
    assert mid.cpu_s_per_frame == pytest.approx(0.030 + (px - 307200) * 0.030 / 921600)
    assert mid.how == "fitted over 2 resolutions"
    one = calibration(cameras=cal.cameras[:1])
    est = camera_cost(one, CameraGroup(name="x", count=1, width=1920, height=1080, fps=1))
    assert est.cpu_s_per_frame == 0.030
    assert "640x480" in est.how


def test_a_model_variant_not_calibrated_says_what_to_run() -> None:
    cams = CameraGroup(name="c", count=1, width=640, height=480, fps=5, model="int8")
    with pytest.raises(ConfigError, match="--camera-models int8"):
        size_site(SiteProfile(cameras=[cams]), calibration())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "at least one"),
        ({"sensors": [{"name": "a", "count": 1, "msg_per_s": 1, "readings_per_msg": 3}]}, "senml"),
        (
            {
                "sensors": [{"name": "a", "count": 1, "msg_per_s": 1}],
                "cameras": [{"name": "a", "count": 1, "width": 64, "height": 64, "fps": 1}],
            },
            "used twice",
        ),
    ],
)
def test_bad_profiles_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiteProfile.model_validate(data)


def test_profile_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sensors]]\nname = "a"\ncount = 0\nmsg_per_s = 1\n')
    with pytest.raises(ConfigError) as err:
        load_profile(bad)
    assert "bad.toml" in str(err.value)
    assert "sensors.0.count" in str(err.value)


@pytest.mark.parametrize("name", ["mixed-sensors.toml", "mixed-cameras.toml"])
def test_examples_are_sized(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cal = tmp_path / "cal.json"
    calibration().save(cal)
    code = main(["size", str(ROOT / "examples" / "sizing" / name), "--calibration", str(cal)])
    out = capsys.readouterr().out
    assert code == 0
    assert "cores" in out
    assert "spool disk" in out
    assert "uplink bandwidth" in out


def test_missing_calibration_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size --calibrate"):
        Calibration.load(tmp_path / "none.json")
