"""Records sent to the core and not yet acknowledged by it (``delivery = "core"``).

:class:`Unacked` is the sender's book of them, plain synchronous logic on an injected
monotonic clock (the sender does the I/O):

* :meth:`Unacked.sending` registers a message's records as it is published, in send order,
  and says which of them are resends (sent before and returned to the spool unacknowledged);
* :meth:`Unacked.pubacked` starts their acknowledgement timer once the broker has them;
* :meth:`Unacked.ack` takes a core acknowledgement and returns the spool record ids it
  releases for deletion;
* :meth:`Unacked.expired` and :meth:`Unacked.return_all` hand back records to send again:
  the sender returns them to the spool, whose lease order (lane, then sequence) sends them
  again before newer records of their lane. The timeout of a record doubles with each try,
  up to :data:`MAX_BACKOFF` times the configured one, so that a core that is slow rather than
  gone is not flooded with copies.

A record the core acknowledges while it is back in the spool is deleted from there all the
same. What the book forgets on a restart only costs a duplicate at the core, which drops it
by envelope id and acknowledges it again.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_BACKOFF", "Unacked"]

MAX_BACKOFF = 8
_LATENCY_SAMPLES = 20_000


@dataclass(slots=True)
class _Entry:
    rid: int
    published: float
    pubacked: float | None
    tries: int
    connection: int


class Unacked:
    """See the module docstring. ``clock`` is a monotonic clock in seconds."""

    def __init__(self, ack_timeout_s: float, limit: int, clock: Callable[[], float]) -> None:
        self.ack_timeout_s = ack_timeout_s
        self.limit = limit
        self._clock = clock
        self._sent: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        # seq -> (rid, tries): sent, unacknowledged, back in the spool to be sent again
        self._returned: collections.OrderedDict[int, tuple[int, int]] = collections.OrderedDict()
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)
        self.acked = 0
        self.unknown = 0
        self.resent = 0
        self.returned = 0

    def __len__(self) -> int:
        return len(self._sent)

    @property
    def room(self) -> int:
        """How many more records may be sent before the bound."""
        return self.limit - len(self._sent)

    def sending(self, records: Sequence[tuple[int, int]], connection: int = 0) -> list[bool]:
        """Register ``(seq, rid)`` pairs about to be published, in send order, on the link's
        ``connection`` (its count of connections made); returns, per record, whether it is
        a resend."""
        now = self._clock()
        sent, returned = self._sent, self._returned
        flags = []
        for seq, rid in records:
            back = returned.pop(seq, None)
            tries = 0 if back is None else back[1]
            old = sent.pop(seq, None)  # sent again while still in the book: keep its tries
            if old is not None:
                tries = max(tries, old.tries)
            sent[seq] = _Entry(rid, now, None, tries, connection)
            flags.append(back is not None or old is not None)
        self.resent += sum(flags)
        return flags

    def pubacked(self, seqs: Iterable[int]) -> None:
        """The broker has the message: the acknowledgement timer of its records starts."""
        now = self._clock()
        sent = self._sent
        for seq in seqs:
            entry = sent.get(seq)
            if entry is not None and entry.pubacked is None:
                entry.pubacked = now

    def ack(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Record ids the core has acknowledged (to delete from the spool)."""
        now = self._clock()
        sent, returned = self._sent, self._returned
        rids: list[int] = []
        latencies = self._latencies
        for lo, hi in ranges:
            width = hi - lo + 1
            seqs: Iterable[int] = range(lo, hi + 1)
            if width > len(sent) + len(returned):  # a wide range: look up what we hold
                seqs = [s for s in itertools.chain(sent, returned) if lo <= s <= hi]
            found = 0
            for seq in seqs:
                entry = sent.pop(seq, None)
                if entry is not None:
                    rids.append(entry.rid)
                    latencies.append(now - entry.published)
                    found += 1
                    continue
                back = returned.pop(seq, None)
                if back is not None:
                    rids.append(back[0])
                    found += 1
            self.unknown += width - found
        self.acked += len(rids)
        return rids

    def _deadline(self, entry: _Entry) -> float | None:
        if entry.pubacked is None:
            return None
        return entry.pubacked + self.ack_timeout_s * min(MAX_BACKOFF, 1 << entry.tries)

    def next_deadline(self) -> float | None:
        """When the oldest record times out (None: nothing is waiting for its ack)."""
        for entry in self._sent.values():
            return self._deadline(entry)
        return None

    def expired(self) -> list[int]:
        """Take back the oldest records whose acknowledgement is overdue (a prefix of the send
        order, so that they go out again in order); returns their record ids."""
        now = self._clock()
        out: list[int] = []
        sent = self._sent
        while sent:
            seq, entry = next(iter(sent.items()))
            deadline = self._deadline(entry)
            if deadline is None or deadline > now:
                break
            sent.popitem(last=False)
            self._return(seq, entry)
            out.append(entry.rid)
        return out

    def sent_before(self, connection: int) -> list[int]:
        """Take back the records the broker acknowledged on an earlier connection than
        ``connection`` (a prefix of the send order): a broker that lost its state with that
        connection may have lost them."""
        out: list[int] = []
        sent = self._sent
        while sent:
            seq, entry = next(iter(sent.items()))
            if entry.connection >= connection or entry.pubacked is None:
                break
            sent.popitem(last=False)
            self._return(seq, entry)
            out.append(entry.rid)
        return out

    def return_all(self, *, pubacked_only: bool = False) -> list[int]:
        """Take back every record (or those the broker has acknowledged) to send again."""
        out: list[int] = []
        keep: list[tuple[int, _Entry]] = []
        for seq, entry in self._sent.items():
            if pubacked_only and entry.pubacked is None:
                keep.append((seq, entry))
                continue
            self._return(seq, entry)
            out.append(entry.rid)
        self._sent = collections.OrderedDict(keep)
        return out

    def _return(self, seq: int, entry: _Entry) -> None:
        self._returned[seq] = (entry.rid, entry.tries + 1)
        self.returned += 1
        # records that left the spool otherwise (cap, TTL) are forgotten oldest first
        while len(self._returned) > 4 * self.limit:
            self._returned.popitem(last=False)

    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest unacknowledged record was sent."""
        for entry in self._sent.values():
            return max(0.0, self._clock() - entry.published)
        return None

    def latency_ms(self, quantile: float) -> float | None:
        """A quantile of the send-to-acknowledgement time of the recent records."""
        if not self._latencies:
            return None
        values = np.fromiter(self._latencies, dtype=np.float64, count=len(self._latencies))
        return float(np.quantile(values, quantile)) * 1000.0
