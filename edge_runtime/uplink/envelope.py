"""The uplink's wire format: a list of envelopes (see :class:`edge_runtime.types.Envelope`)
per message, msgpack or JSON.

The envelope a summary travels in from a site to the core:

``id`` is derived from what identifies the summary (site, pipeline, key, window, kind, revision,
and for a replayed recording its namespace), so a summary sent twice carries the same id and the
core can drop the duplicate, while a different result of the same window carries a higher
revision and so another id (see :func:`edge_runtime.types.envelope_id`). ``seq`` is a
per-site sequence number that only grows, assigned when the summary is accepted for sending.
"""

from __future__ import annotations

from typing import Literal

import msgpack
import orjson

from edge_runtime.errors import DecodeError
from edge_runtime.types import ENVELOPE_SCHEMA, Envelope, envelope_id

__all__ = [
    "ENVELOPE_SCHEMA",
    "Encoding",
    "Envelope",
    "decode_envelopes",
    "encode_envelopes",
    "envelope_id",
    "flag_resent",
]

Encoding = Literal["msgpack", "json"]

_RESENT_ENTRY: bytes = msgpack.packb("resent") + msgpack.packb(True)
_FIXMAP_FULL = 0x8F
_MAP16 = 0xDE


def encode_envelopes(envelopes: list[Envelope], encoding: Encoding) -> bytes:
    """One uplink message: a list of envelopes (several summaries may share a message)."""
    docs = [e.to_dict() for e in envelopes]
    if encoding == "json":
        return orjson.dumps(docs)
    return msgpack.packb(docs, use_bin_type=True)


def decode_envelopes(payload: bytes) -> list[Envelope]:
    """Decode an uplink message; the encoding is recognised from the first byte."""
    try:
        if payload[:1] in (b"[", b"{"):
            docs = orjson.loads(payload)
        else:
            docs = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_envelope", str(exc)) from exc
    if isinstance(docs, dict):
        docs = [docs]
    if not isinstance(docs, list):
        raise DecodeError("malformed_envelope", "expected a list of envelopes")
    return [Envelope.from_dict(d) for d in docs]


def flag_resent(payload: bytes) -> bytes:
    """A msgpack envelope document with ``resent: true`` added, without decoding it: the
    map's entry count goes up by one and the entry is appended (the spool's stored documents
    are 16-bit maps). Other forms are decoded and encoded again."""
    head = payload[:1]
    if head and 0x80 <= head[0] < _FIXMAP_FULL:
        return bytes((head[0] + 1,)) + payload[1:] + _RESENT_ENTRY
    if head == bytes((_MAP16,)) and payload[1:3] != b"\xff\xff":
        count = int.from_bytes(payload[1:3], "big") + 1
        return head + count.to_bytes(2, "big") + payload[3:] + _RESENT_ENTRY
    try:
        doc = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_envelope", str(exc)) from exc
    if not isinstance(doc, dict):
        raise DecodeError("malformed_envelope", "an envelope is a map")
    doc["resent"] = True
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed
