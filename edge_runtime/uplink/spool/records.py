"""What the spool stores per record, and how a stored envelope becomes wire bytes.

A record's id is ``priority << 56 | seq``: each priority class is a contiguous rowid range in
sequence order, so the sender's scans are rowid range scans and the table needs no secondary
index. ``seq`` is the per-site sequence number the spool assigns when it accepts the record.

The payload is the msgpack encoding of :meth:`Envelope.to_dict` with the ``backlog`` entry
written last, so that the sender can flag a stored envelope as backlog by rewriting the final
byte instead of decoding and encoding it again, and can build a whole uplink message by
concatenating stored payloads behind a msgpack array header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

import msgpack

from edge_runtime.types import ENVELOPE_SCHEMA, Envelope, Stat

__all__ = [
    "Lane",
    "Priority",
    "SpoolRecord",
    "decode_payload",
    "encode_payload",
    "finite_stats",
    "flag_backlog",
    "pack_message",
    "priority_for",
    "record_id",
]

PRIORITY_SHIFT = 56
SEQ_MASK = (1 << PRIORITY_SHIFT) - 1
_PACKED_FALSE: bytes = msgpack.packb(False)
_PACKED_TRUE: bytes = msgpack.packb(True)


class Priority(IntEnum):
    """Priority class of a record; the sender drains lower values first."""

    ALERT = 0
    LIVE = 1
    BACKLOG = 2


class Lane(StrEnum):
    """Where the sender takes a record from: alerts, live data, or the rate-capped backlog."""

    ALERT = "alert"
    LIVE = "live"
    BACKLOG = "backlog"


def record_id(priority: int, seq: int) -> int:
    return (priority << PRIORITY_SHIFT) | seq


def priority_for(envelope: Envelope) -> Priority:
    """The default class: alerts first, compacted or backlog-flagged envelopes last."""
    if envelope.kind == "alert":
        return Priority.ALERT
    if envelope.backlog or "compacted_from" in envelope.attrs:
        return Priority.BACKLOG
    return Priority.LIVE


def finite_stats(stats: Mapping[str, Stat]) -> Mapping[str, Stat]:
    """``stats`` as a plain dict with NaN and infinities replaced by None (msgpack would keep
    them; JSON cannot)."""
    if stats.__class__ is dict:
        try:
            if math.isfinite(sum(stats.values())):
                return stats  # every value finite (the usual case): no copy
        except TypeError:
            pass  # a None among them (or not numbers: packing tells)
    isfinite = math.isfinite
    for value in stats.values():
        if isinstance(value, float) and not isfinite(value):
            return {
                k: (None if isinstance(v, float) and not isfinite(v) else v)
                for k, v in stats.items()
            }
    return stats if stats.__class__ is dict else dict(stats)


def encode_payload(envelope: Envelope, seq: int) -> bytes:
    """The stored form of ``envelope`` with sequence number ``seq`` (see the module doc).

    Decodes to the same document as :meth:`Envelope.to_dict` (NaN and inf stats become None).
    The writer builds the same document (``edge_runtime.uplink.spool._encode``).
    """
    attrs = envelope.attrs
    doc = {
        "schema": ENVELOPE_SCHEMA,
        "id": envelope.id,
        "site": envelope.site,
        "seq": seq,
        "pipeline": envelope.pipeline,
        "key": envelope.key,
        "window_start": envelope.window_start,
        "window_end": envelope.window_end,
        "stats": finite_stats(envelope.stats),
        "kind": envelope.kind,
        "revision": envelope.revision,
        "created_at": envelope.created_at,
        "version": envelope.version,
        "config_hash": envelope.config_hash,
        "replayed": envelope.replayed,
        "attrs": attrs if attrs.__class__ is dict else dict(attrs),
    }
    if envelope.site_revision:  # left out while empty, as in Envelope.to_dict
        doc["site_revision"] = envelope.site_revision
    doc["backlog"] = envelope.backlog  # last: flag_backlog rewrites the final byte
    return msgpack.packb(doc, use_bin_type=True)


def decode_payload(payload: bytes) -> Envelope:
    """The envelope a stored payload holds; raises ``DecodeError`` when it is malformed."""
    doc: Any = msgpack.unpackb(payload, raw=False)
    return Envelope.from_dict(doc)


def flag_backlog(payload: bytes) -> bytes:
    """``payload`` with ``backlog`` set to True, by rewriting the final byte when possible."""
    last = payload[-1:]
    if last == _PACKED_TRUE:
        return payload
    if last == _PACKED_FALSE:  # the packed False of the backlog entry, which comes last
        return payload[:-1] + _PACKED_TRUE
    envelope = decode_payload(payload).as_backlog()  # not written by encode_payload
    return encode_payload(envelope, envelope.seq)


def pack_message(payloads: list[bytes]) -> bytes:
    """One uplink message (a msgpack array of envelopes) from stored payloads: msgpack's array
    header, then the payloads as they are stored."""
    header: bytes = msgpack.Packer().pack_array_header(len(payloads))
    return b"".join([header, *payloads])


class SpoolRecord(NamedTuple):
    """A pending record leased to the sender.

    ``payload`` is the stored envelope (see :func:`encode_payload`); ``backlog`` says whether
    the sender must flag it as backlog (it was pending when the link went down, or is older
    than the live window); ``lane`` is the queue it was leased from. (A named tuple: leases
    build thousands of these per second.)
    """

    id: int
    stream: str
    envelope_id: str
    window_start: float
    window_end: float
    created_at: float
    payload: bytes
    lane: Lane
    backlog: bool

    @property
    def seq(self) -> int:
        return self.id & SEQ_MASK

    @property
    def priority(self) -> Priority:
        return Priority(self.id >> PRIORITY_SHIFT)

    def wire_payload(self) -> bytes:
        """The msgpack envelope as it goes on the wire (flagged as backlog when it must be)."""
        return flag_backlog(self.payload) if self.backlog else self.payload

    def envelope(self) -> Envelope:
        """The decoded envelope, flagged as backlog when it must be."""
        envelope = decode_payload(self.payload)
        return envelope.as_backlog() if self.backlog and not envelope.backlog else envelope
