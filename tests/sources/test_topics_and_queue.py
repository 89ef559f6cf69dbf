from __future__ import annotations

import asyncio

import pytest

from edge_runtime.pipelines import RawMessage
from edge_runtime.sources.queue import IngestQueue
from edge_runtime.sources.topics import TopicMatcher, filter_covers, minimal_filters, topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "a/x/y", False),
        ("a/b", "a/b", True),
    ],
)
def test_topic_matching(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected
    assert TopicMatcher([pattern]).matches(topic) is expected


def test_overlapping_filters_are_collapsed() -> None:
    assert filter_covers("in/#", "in/json/+")
    assert not filter_covers("in/json/+", "in/#")
    assert filter_covers("a/+", "a/b")
    assert minimal_filters(["in/json/+", "in/#", "x/y", "x/+", "z"]) == ["in/#", "x/+", "z"]


def _m(i: int) -> RawMessage:
    return RawMessage("t", str(i).encode())


async def test_drop_oldest_and_drop_newest_are_counted() -> None:
    q = IngestQueue(3, "drop_oldest")
    for i in range(5):
        q.put(_m(i))
    assert q.dropped == 2
    assert [m.payload for m in await q.get_batch(10, 0)] == [b"2", b"3", b"4"]
    q = IngestQueue(3, "drop_newest")
    for i in range(5):
        q.put(_m(i))
    assert [m.payload for m in await q.get_batch(10, 0)] == [b"0", b"1", b"2"]
    assert q.dropped == 2


async def test_batch_waits_to_fill_then_returns() -> None:
    q = IngestQueue(100, "drop_oldest")
    q.put(_m(0))
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, q.put, _m(1))
    batch = await q.get_batch(2, 1.0)
    assert len(batch) == 2
    q.put(_m(2))
    t0 = loop.time()
    assert len(await q.get_batch(50, 0.05)) == 1
    assert loop.time() - t0 >= 0.04
