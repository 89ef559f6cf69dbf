"""The envelope a summary travels in from a site to the core.

``id`` is derived from what identifies the summary (site, pipeline, key, window, kind, revision),
so a summary sent twice carries the same id and the core can drop the duplicate. ``seq`` is a
per-site sequence number that only grows, assigned when the summary is accepted for sending.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import msgpack
import orjson

from edge_runtime.errors import DecodeError
from edge_runtime.plugins._types import Stat, Summary, SummaryKind

__all__ = ["ENVELOPE_SCHEMA", "Encoding", "Envelope", "decode_envelopes", "encode_envelopes"]

ENVELOPE_SCHEMA = 1
Encoding = Literal["msgpack", "json"]


def envelope_id(site: str, summary: Summary) -> str:
    ident = "\x1f".join(
        (
            site,
            summary.pipeline,
            summary.key,
            repr(float(summary.window_start)),
            repr(float(summary.window_end)),
            summary.kind,
            str(summary.revision),
        )
    )
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


@dataclass(slots=True, frozen=True)
class Envelope:
    """A summary with the site-level facts the core needs."""

    id: str
    site: str
    seq: int
    pipeline: str
    key: str
    window_start: float
    window_end: float
    stats: Mapping[str, Stat]
    kind: SummaryKind
    revision: int
    created_at: float
    version: str
    config_hash: str
    backlog: bool = False
    replayed: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(
        cls,
        summary: Summary,
        *,
        site: str,
        seq: int,
        created_at: float,
        version: str,
        config_hash: str,
        replayed: bool = False,
    ) -> Envelope:
        return cls(
            id=envelope_id(site, summary),
            site=site,
            seq=seq,
            pipeline=summary.pipeline,
            key=summary.key,
            window_start=summary.window_start,
            window_end=summary.window_end,
            stats=summary.stats,
            kind=summary.kind,
            revision=summary.revision,
            created_at=created_at,
            version=version,
            config_hash=config_hash,
            replayed=replayed,
            attrs=summary.attrs,
        )

    @property
    def stream(self) -> str:
        """Ordering is kept per stream: one pipeline's one key."""
        return f"{self.pipeline}/{self.key}"

    def as_backlog(self) -> Envelope:
        return replace(self, backlog=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": ENVELOPE_SCHEMA,
            "id": self.id,
            "site": self.site,
            "seq": self.seq,
            "pipeline": self.pipeline,
            "key": self.key,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "stats": {k: _finite(v) for k, v in self.stats.items()},
            "kind": self.kind,
            "revision": self.revision,
            "created_at": self.created_at,
            "version": self.version,
            "config_hash": self.config_hash,
            "backlog": self.backlog,
            "replayed": self.replayed,
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Envelope:
        try:
            if doc.get("schema") != ENVELOPE_SCHEMA:
                raise DecodeError("wrong_schema", f"envelope schema {doc.get('schema')!r}")
            return cls(
                id=str(doc["id"]),
                site=str(doc["site"]),
                seq=int(doc["seq"]),
                pipeline=str(doc["pipeline"]),
                key=str(doc["key"]),
                window_start=float(doc["window_start"]),
                window_end=float(doc["window_end"]),
                stats=dict(doc["stats"]),
                kind=doc["kind"],
                revision=int(doc["revision"]),
                created_at=float(doc["created_at"]),
                version=str(doc["version"]),
                config_hash=str(doc["config_hash"]),
                backlog=bool(doc.get("backlog", False)),
                replayed=bool(doc.get("replayed", False)),
                attrs=dict(doc.get("attrs") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError("malformed_envelope", f"{exc!r}") from exc


def _finite(value: Stat) -> Stat:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf have no JSON form; None means "no value" (e.g. stddev of 0 readings)
    return value


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
