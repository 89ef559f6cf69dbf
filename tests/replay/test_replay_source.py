"""ReplaySource: deterministic batches on recorded time, clock, time shift, loops, pacing."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from edge_runtime import RawMessage
from edge_runtime.replay import (
    RecordingHeader,
    RecordingWriter,
    ReplayProgress,
    ReplaySource,
    timeline,
)

T0 = 1_700_000_000.0


def make(path: Path, times: list[float], topic: str = "s/{i}") -> Path:
    with RecordingWriter(path, RecordingHeader.new(t0=T0)) as w:
        for i, t in enumerate(times):
            w.write(RawMessage(topic.format(i=i % 5), f"{i}".encode(), i % 2, False, t))
    return path


async def collect(source: ReplaySource) -> list[tuple[list[RawMessage], float]]:
    return [(batch, clock) async for batch, clock in source]


def shape(batches: list[tuple[list[RawMessage], float]]) -> list[tuple[list[bytes], float]]:
    return [([m.payload for m in b], round(c, 9)) for b, c in batches]


@pytest.fixture
def irregular(tmp_path: Path) -> Path:
    """Bursts, silences, two messages recorded out of order, 400 messages over ~25 s."""
    times = []
    t = T0
    for i in range(400):
        t += [0.001, 0.02, 0.0, 0.3, 0.003][i % 5]
        if i in (100, 101):
            t += 5.0  # silence
        times.append(t)
    times[250], times[251] = times[251], times[250]  # out of order
    times[300] -= 2.0  # a step back
    return make(tmp_path / "irregular.edgerec", times)


async def test_batches_are_cut_on_recorded_time_not_wall_time(irregular: Path) -> None:
    source = ReplaySource(irregular, speed=0, batch_interval_s=0.5)
    fast = await collect(source)
    paced = await collect(ReplaySource(irregular, speed=200.0, batch_interval_s=0.5))
    again = await collect(ReplaySource(irregular, speed=math.inf, batch_interval_s=0.5))
    assert shape(fast) == shape(paced) == shape(again) == shape(await collect(source))

    messages = [m for b, _ in fast for m in b]
    assert [m.payload for m in messages] == [f"{i}".encode() for i in range(400)]
    clocks = [c for _, c in fast]
    assert clocks == sorted(clocks)  # the runtime's clock never goes back
    for batch, clock in fast:  # every message is at or before its batch's clock time
        assert all(m.received_at <= clock + 1e-9 or m.payload in (b"300",) for m in batch)


async def test_batch_clock_is_the_end_of_a_fixed_step(tmp_path: Path) -> None:
    times = [T0 + 0.05, T0 + 0.07, T0 + 0.31, T0 + 0.99, T0 + 3.2]
    path = make(tmp_path / "r.edgerec", times)
    got = shape(await collect(ReplaySource(path, batch_interval_s=0.25)))
    origin = T0 + 0.05
    assert got == [
        ([b"0", b"1"], round(origin + 0.25, 9)),
        ([b"2"], round(origin + 0.5, 9)),
        ([], round(origin + 0.75, 9)),  # a silent step: one tick where the next data starts
        ([b"3"], round(origin + 1.0, 9)),
        ([], round(origin + 3.0, 9)),
        ([b"4"], round(origin + 3.25, 9)),
    ]


async def test_batch_max_splits_a_step(tmp_path: Path) -> None:
    times = [T0 + i * 0.001 for i in range(25)]
    path = make(tmp_path / "r.edgerec", times)
    got = await collect(ReplaySource(path, batch_interval_s=10, batch_max=10))
    assert [len(b) for b, _ in got] == [10, 10, 5]
    assert got[0][1] == pytest.approx(T0 + 0.009)  # a split-off part: its last message's time
    assert got[-1][1] == pytest.approx(T0 + 10)


async def test_time_shift_moves_times_but_not_batches(irregular: Path) -> None:
    plain = await collect(ReplaySource(irregular, time_shift="none"))
    before = time.time()
    now = await collect(ReplaySource(irregular, time_shift="now"))
    after = time.time()
    fixed = await collect(ReplaySource(irregular, time_shift=-1000.0))
    assert [[m.payload for m in b] for b, _ in plain] == [[m.payload for m in b] for b, _ in now]
    first = now[0][0][0].received_at
    assert before <= first <= after
    shift = first - plain[0][0][0].received_at
    for (b1, c1), (b2, c2), (_, c3) in zip(plain, now, fixed, strict=True):
        assert c2 - c1 == pytest.approx(shift, abs=1e-5)
        assert c3 - c1 == pytest.approx(-1000.0, abs=1e-6)
        for m1, m2 in zip(b1, b2, strict=True):
            assert m2.received_at - m1.received_at == pytest.approx(shift, abs=1e-5)
            assert m2.payload == m1.payload  # payloads are never touched


async def test_loops_continue_recorded_time(tmp_path: Path) -> None:
    times = [T0, T0 + 1.0, T0 + 2.0, T0 + 4.0]  # span 4 s, mean interval 4/3 s
    path = make(tmp_path / "r.edgerec", times)
    messages = list(timeline(path, loop=3))
    assert len(messages) == 12
    got = [m.received_at - T0 for m in messages]
    period = 4.0 + 4.0 / 3
    expected = [t - T0 + k * period for k in range(3) for t in times]
    assert got == pytest.approx(expected)
    batches = await collect(ReplaySource(path, loop=3, batch_interval_s=1.0))
    assert sum(len(b) for b, _ in batches) == 12


async def test_pacing_follows_the_speed(tmp_path: Path) -> None:
    """2 s of recording at 4× takes at least 0.5 s (pacing never runs ahead of the recording);
    at max speed nothing waits, so it takes less than the paced run. Only bounds that a slower
    machine cannot break are asserted."""
    times = [T0 + i * 0.05 for i in range(41)]
    path = make(tmp_path / "r.edgerec", times)
    start = time.monotonic()
    await collect(ReplaySource(path, speed=4.0, batch_interval_s=0.05))
    paced = time.monotonic() - start
    start = time.monotonic()
    await collect(ReplaySource(path, speed=0, batch_interval_s=0.05))
    fast = time.monotonic() - start
    assert paced >= 0.45
    assert fast < paced


async def test_stop_ends_a_replay(tmp_path: Path) -> None:
    path = make(tmp_path / "r.edgerec", [T0 + i for i in range(100)])
    stop = asyncio.Event()
    source = ReplaySource(path, speed=1.0, stop=stop, batch_interval_s=1.0)
    got = []

    async def stopper() -> None:
        await asyncio.sleep(0.3)
        stop.set()

    task = asyncio.create_task(stopper())
    start = time.monotonic()
    async for batch, _ in source:
        got.append(batch)
    await task
    assert time.monotonic() - start < 30  # 100 s of recording at 1x: the stop ended it
    assert len(got) < 100


async def test_empty_recording(tmp_path: Path) -> None:
    path = make(tmp_path / "r.edgerec", [])
    assert await collect(ReplaySource(path, loop=0)) == []  # endless looping of nothing ends


async def test_progress_reports_each_pass(tmp_path: Path) -> None:
    path = make(tmp_path / "r.edgerec", [T0 + i * 0.01 for i in range(50)])
    seen: list[ReplayProgress] = []
    source = ReplaySource(path, speed=1.0, loop=2, batch_interval_s=0.05, progress=seen.append)
    await collect(source)
    assert len(seen) >= 3
    assert [p.messages for p in seen] == sorted(p.messages for p in seen)
    assert {p.passes for p in seen} == {2}
    assert seen[-1].messages == 100
    assert (seen[-1].pass_index, seen[-1].fraction) == (1, 1.0)
    assert any(p.pass_index == 0 and 0 < p.fraction < 1 for p in seen)
    assert 0.8 < seen[-1].recorded_s < 1.1  # two passes of 0.49 s, 0.01 s apart
