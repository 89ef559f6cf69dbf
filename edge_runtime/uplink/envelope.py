"""The uplink's wire format: a list of envelopes (see :class:`edge_runtime.types.Envelope`)
per message, msgpack or JSON.

The envelope a summary travels in from a site to the core:

``id`` is derived from what identifies the summary (site, pipeline, key, window, kind, revision),
so a summary sent twice carries the same id and the core can drop the duplicate. ``seq`` is a
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
]

Encoding = Literal["msgpack", "json"]


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
