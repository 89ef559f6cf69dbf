"""The recording file format: round trip, torn tails, damaged records, append, limits."""

from __future__ import annotations

import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from edge_runtime import RawMessage
from edge_runtime.replay import (
    RecordingError,
    RecordingHeader,
    RecordingReader,
    RecordingWriter,
    is_recording,
)
from edge_runtime.replay.format import MAGIC

T0 = 1_700_000_000.0


def sample_messages(n: int = 300, seed: int = 7) -> list[RawMessage]:
    """Mixed topics (some repeated, some unicode), QoS 0/1/2, retain, binary and empty payloads,
    receive times mostly increasing with a few steps back (clock adjustments happen)."""
    rng = random.Random(seed)
    topics = [f"city/{i}/air" for i in range(7)] + ["ü/ñ/温度", "a", "x/" + "y" * 300]
    out = []
    t = T0
    for i in range(n):
        t += rng.choice([0.0, 0.0005, 0.01, 1.5, -0.2])
        size = rng.choice([0, 1, 17, 300, 70_000])
        payload = bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)
        out.append(
            RawMessage(
                rng.choice(topics),
                payload[:size],
                qos=i % 3,
                retain=rng.random() < 0.1,
                received_at=round(t, 6),
            )
        )
    return out


def write(path: Path, messages: list[RawMessage], header: RecordingHeader | None = None) -> None:
    with RecordingWriter(path, header or RecordingHeader.new(source="test", t0=T0)) as w:
        for m in messages:
            assert w.write(m)


def same(a: RawMessage, b: RawMessage) -> bool:
    return (
        a.topic == b.topic
        and a.payload == b.payload
        and a.qos == b.qos
        and a.retain == b.retain
        and abs(a.received_at - b.received_at) < 1e-6
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    messages = sample_messages()
    path = tmp_path / "r.edgerec"
    header = RecordingHeader.new(
        source="mqtt://127.0.0.1:1883",
        filters=["city/#", "a"],
        attribution="someone, CC BY 4.0",
        notes="a note",
        meta={"k": [1, 2]},
        t0=T0,
    )
    write(path, messages, header)

    reader = RecordingReader(path)
    assert reader.header.source == "mqtt://127.0.0.1:1883"
    assert reader.header.filters == ("city/#", "a")
    assert reader.header.attribution == "someone, CC BY 4.0"
    assert reader.header.meta == {"k": [1, 2]}
    assert reader.header.tool.startswith("edge-runtime ")
    got = list(reader)
    assert len(got) == len(messages)
    assert all(same(a, b) for a, b in zip(got, messages, strict=True))
    assert reader.tail is None

    info = reader.scan()
    assert info.count == len(messages)
    assert info.closed_cleanly
    assert info.tail is None
    assert info.first_at == min(m.received_at for m in messages)
    assert info.retained == sum(m.retain for m in messages)
    assert sum(info.topics.values()) == len(messages)
    assert info.qos == {q: sum(m.qos == q for m in messages) for q in (0, 1, 2)}
    assert is_recording(path)


def test_records_are_compact(tmp_path: Path) -> None:
    """A typical sensor message costs its payload plus about 15 bytes once its topic is known."""
    path = tmp_path / "c.edgerec"
    payload = b'{"value":12.5,"ts":1700000000.0}'
    with RecordingWriter(path, RecordingHeader.new(t0=T0)) as w:
        for i in range(1000):
            w.write(RawMessage(f"s/{i % 10}/v", payload, 1, False, T0 + i * 0.01))
    per_message = (path.stat().st_size - 400) / 1000
    assert per_message < len(payload) + 16


def test_every_truncation_point_gives_the_records_before_it(tmp_path: Path) -> None:
    """Cut the file at many points (a Ctrl-C or power cut mid-write): the reader returns every
    record that is wholly before the cut, in order, and reports the torn rest."""
    messages = sample_messages(60, seed=3)
    full = tmp_path / "full.edgerec"
    write(full, messages)
    data = full.read_bytes()
    reader = RecordingReader(full)
    ends = []  # file offset just past each record, from the frame lengths
    offset = reader.data_offset
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        offset += 8 + length
        ends.append(offset)
    assert len(ends) == len(messages) + 1  # + the closing record

    rng = random.Random(11)
    points = rng.sample(range(reader.data_offset, len(data)), 150)
    cuts = sorted({reader.data_offset, len(data) - 1, *points})
    cut_path = tmp_path / "cut.edgerec"
    for cut in cuts:
        cut_path.write_bytes(data[:cut])
        r = RecordingReader(cut_path)
        got = list(r)
        complete = sum(1 for e in ends[: len(messages)] if e <= cut)
        assert len(got) == complete, cut
        assert all(same(a, b) for a, b in zip(got, messages, strict=False))
        boundary = cut in ends or cut == reader.data_offset
        if boundary:
            assert r.tail is None
        else:
            assert r.tail is not None
            assert r.tail.reason == "truncated"
            assert r.tail.offset + r.tail.nbytes == cut
        info = r.scan()
        assert not info.closed_cleanly
        assert info.count == complete


def test_a_damaged_record_stops_reading_there(tmp_path: Path) -> None:
    messages = sample_messages(50, seed=5)
    path = tmp_path / "r.edgerec"
    write(path, messages)
    data = bytearray(path.read_bytes())
    start = RecordingReader(path).data_offset
    offset = start
    for _ in range(20):  # skip 20 records
        offset += 8 + int.from_bytes(data[offset : offset + 4], "little")
    data[offset + 8 + 2] ^= 0x40  # flip a bit inside record 21's body
    path.write_bytes(data)

    r = RecordingReader(path)
    got = list(r)
    assert len(got) == 20
    assert all(same(a, b) for a, b in zip(got, messages, strict=False))
    assert r.tail is not None
    assert r.tail.reason == "bad_crc"
    assert r.tail.offset == offset
    assert r.tail.nbytes == len(data) - offset
    assert not r.scan().closed_cleanly


def test_a_record_with_a_sound_crc_but_wrong_shape_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.edgerec"
    write(path, sample_messages(3))
    body = msgpack.packb([1, 99, b"x", 0])  # topic index 99 was never defined
    with path.open("ab") as fh:
        fh.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
    r = RecordingReader(path)
    assert len(list(r)) == 3
    assert r.tail is not None and r.tail.reason == "bad_record"


def test_a_zeroed_tail_is_a_torn_tail(tmp_path: Path) -> None:
    """After a power cut a file system may leave zeros where the last write should be."""
    path = tmp_path / "r.edgerec"
    write(path, sample_messages(10))
    with path.open("ab") as fh:
        fh.write(b"\0" * 4096)
    r = RecordingReader(path)
    assert len(list(r)) == 10
    assert r.tail is not None and r.tail.reason == "bad_length"


def test_bad_files_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(RecordingError, match="not an edge-runtime recording"):
        RecordingReader(other)
    assert not is_recording(other)

    path = tmp_path / "r.edgerec"
    write(path, sample_messages(3))
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 8 + 3] ^= 1  # inside the header map
    damaged = tmp_path / "damaged.edgerec"
    damaged.write_bytes(data)
    with pytest.raises(RecordingError, match="header is damaged"):
        RecordingReader(damaged)

    short = tmp_path / "short.edgerec"
    short.write_bytes(bytes(data[:20]))
    with pytest.raises(RecordingError, match="truncated"):
        RecordingReader(short)


def test_append_cuts_a_torn_tail_and_continues(tmp_path: Path) -> None:
    messages = sample_messages(40, seed=9)
    path = tmp_path / "r.edgerec"
    w = RecordingWriter(path, RecordingHeader.new(source="first", t0=T0))
    for m in messages[:25]:
        w.write(m)
    w.abandon()  # no closing record: a crash
    with path.open("ab") as fh:
        fh.write(b"\x13\x00\x00\x00garbage")  # and half a record
    assert RecordingReader(path).scan().tail is not None

    with RecordingWriter(path, append=True) as w2:
        assert w2.header.source == "first"  # the original header is kept
        for m in messages[25:]:
            w2.write(m)
    r = RecordingReader(path)
    got = list(r)
    assert r.tail is None
    assert len(got) == len(messages)
    assert all(same(a, b) for a, b in zip(got, messages, strict=True))
    assert r.scan().closed_cleanly


def test_append_after_a_clean_close(tmp_path: Path) -> None:
    messages = sample_messages(30, seed=2)
    path = tmp_path / "r.edgerec"
    write(path, messages[:10])
    with RecordingWriter(path, append=True) as w:
        for m in messages[10:]:
            w.write(m)
    r = RecordingReader(path)
    got = list(r)
    assert [m.topic for m in got] == [m.topic for m in messages]
    assert r.closes == 2


def test_max_bytes_is_never_exceeded(tmp_path: Path) -> None:
    path = tmp_path / "r.edgerec"
    limit = 20_000
    written = 0
    with RecordingWriter(path, RecordingHeader.new(t0=T0)) as w:
        for m in sample_messages(500):
            if not w.write(m, max_bytes=limit):
                break
            written += 1
    assert 0 < written < 500
    assert path.stat().st_size <= limit
    assert RecordingReader(path).scan().count == written


def test_writer_refuses_to_overwrite_by_accident(tmp_path: Path) -> None:
    path = tmp_path / "r.edgerec"
    write(path, sample_messages(2))
    with pytest.raises(RecordingError, match="already exists"):
        RecordingWriter(path)
    with RecordingWriter(path, overwrite=True):
        pass
    assert RecordingReader(path).scan().count == 0


def test_flushes_reach_the_file_before_close(tmp_path: Path) -> None:
    """Buffered records reach the OS every flush_bytes; a crash loses at most that buffer."""
    path = tmp_path / "r.edgerec"
    w = RecordingWriter(path, RecordingHeader.new(t0=T0), flush_bytes=1000, flush_interval_s=60)
    for m in sample_messages(100, seed=1):
        w.write(m)
    copy = tmp_path / "copy.edgerec"
    shutil.copyfile(path, copy)  # what a crash right now would leave
    w.close()
    crashed = RecordingReader(copy).scan()
    assert 0 < crashed.count <= 100
    assert crashed.tail is None  # flushes write whole records
    assert RecordingReader(path).scan().count == 100
    os.remove(copy)


def test_count_messages_hops_over_the_records(tmp_path: Path) -> None:
    messages = sample_messages(120, seed=4)
    path = tmp_path / "r.edgerec"
    write(path, messages)
    assert RecordingReader(path).count_messages() == 120
    data = path.read_bytes()
    cut = tmp_path / "cut.edgerec"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert RecordingReader(cut).count_messages() == len(list(RecordingReader(cut)))
