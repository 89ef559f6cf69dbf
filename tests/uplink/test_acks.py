"""The core's acknowledgements (codec) and the sender's book of unacknowledged records, on an
injected clock."""

from __future__ import annotations

import msgpack
import pytest

from edge_runtime.errors import DecodeError
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.acks import decode_ack, encode_ack, seq_ranges
from edge_runtime.uplink.envelope import decode_envelopes, flag_resent
from edge_runtime.uplink.inflight import MAX_BACKOFF, Unacked
from edge_runtime.uplink.spool.records import encode_payload, flag_backlog, pack_message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ack_round_trip_in_compact_ranges() -> None:
    ranges = seq_ranges([7, 3, 4, 5, 9, 4, 10, 1])
    assert ranges == [(1, 1), (3, 5), (7, 7), (9, 10)]
    ack = decode_ack(encode_ack("site-a", ranges))
    assert ack.site == "site-a" and list(ack.ranges) == ranges and len(ack) == 7
    assert len(encode_ack("s", [(1, 1_000_000)])) < 40  # a long run costs two integers


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "site": "s", "seqs": [1, 2]}),
        msgpack.packb({"v": 1, "site": "s", "seqs": [1]}),
        msgpack.packb({"v": 1, "site": "s", "seqs": [5, 2]}),
        msgpack.packb({"v": 1, "site": 3, "seqs": [1, 2]}),
        msgpack.packb({"v": 1, "site": "s", "seqs": ["1", 2]}),
    ],
)
def test_malformed_acks_are_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_ack(payload)
    assert info.value.reason == "malformed_ack"


def test_flag_resent_on_stored_payloads_and_other_maps() -> None:
    env = Envelope.wrap(
        Summary("p", "k", 0.0, 60.0, {"count": 3}),
        site="s",
        seq=4,
        created_at=1.0,
        version="v",
        config_hash="h",
    )
    stored = encode_payload(env, 4)
    doc = env.to_dict()
    small = msgpack.packb({k: doc[k] for k in list(doc)[:14]})  # the required fields: a fixmap
    assert small[0] == 0x8E
    message = pack_message([flag_resent(flag_backlog(stored)), stored, flag_resent(small)])
    first, second, third = decode_envelopes(message)
    assert first.resent and first.backlog and not second.resent and third.resent
    assert first.id == second.id  # not part of the id
    assert "resent" not in env.to_dict()  # absent from the wire while false


def test_unacked_acks_time_out_in_order_and_back_off() -> None:
    clock = Clock()
    book = Unacked(ack_timeout_s=10.0, limit=5, clock=clock)
    assert book.sending([(1, 101), (2, 102), (3, 103)]) == [False] * 3
    assert book.room == 2 and book.next_deadline() is None  # no PUBACK yet: no timer
    book.pubacked([1, 2, 3])
    clock.now += 5
    assert book.ack([(2, 2)]) == [102] and book.expired() == []
    clock.now += 5
    assert book.expired() == [101, 103]  # the overdue prefix, in send order
    assert len(book) == 0 and book.returned == 2
    # sent again: flagged, and the next timeout is twice as long
    assert book.sending([(1, 101), (3, 103), (4, 104)]) == [True, True, False]
    book.pubacked([1, 3, 4])
    clock.now += 10
    assert book.expired() == []  # 1 waits 20 s now, and 4 waits behind it
    clock.now += 10
    assert book.expired() == [101, 103, 104]
    for _ in range(10):
        book.sending([(1, 101)])
        book.pubacked([1])
        clock.now += 10 * MAX_BACKOFF
        assert book.expired() == [101]  # never more than MAX_BACKOFF times the timeout


def test_unacked_ack_of_returned_unknown_and_wide_ranges() -> None:
    clock = Clock()
    book = Unacked(ack_timeout_s=1.0, limit=100, clock=clock)
    book.sending([(s, 1000 + s) for s in range(1, 11)])
    book.pubacked(range(1, 11))
    assert book.return_all(pubacked_only=True) == [1000 + s for s in range(1, 11)]
    book.sending([(s, 1000 + s) for s in range(1, 4)])
    clock.now += 0.25
    # acked while back in the spool: deleted from there all the same
    assert sorted(book.ack([(1, 1_000_000)])) == [1000 + s for s in range(1, 11)]
    assert book.unknown == 1_000_000 - 10 and len(book) == 0
    assert book.latency_ms(0.5) == pytest.approx(250.0)
    assert book.oldest_age_s() is None


def test_unacked_records_of_an_earlier_connection_come_back() -> None:
    book = Unacked(ack_timeout_s=60.0, limit=100, clock=Clock())
    book.sending([(1, 11), (2, 12)], connection=1)
    book.pubacked([1, 2])
    book.sending([(3, 13)], connection=2)
    book.pubacked([3])
    book.sending([(4, 14)], connection=2)  # no PUBACK yet
    assert book.sent_before(1) == []
    assert book.sent_before(2) == [11, 12]
    assert book.sent_before(3) == [13]  # stops at the one still waiting for its PUBACK
    assert book.sending([(1, 11)], connection=3) == [True]
