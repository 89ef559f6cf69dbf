"""Signed messages: an uplink message or a core acknowledgement, sealed by its sender's key.

On the wire a sealed message is a msgpack map::

    {"sealed": 1, "body": <bytes>, "sig": <64 bytes>}

``sig`` is the sender's Ed25519 signature over ``body`` exactly as sent; ``body`` is itself a
msgpack map::

    {"kind": "uplink" | "ack" | "fleet" | "heartbeat", "site": "<signer>", "kid": "<key id>",
     "ts": <microseconds since the epoch, strictly growing per sender>, "payload": <bytes>}

``payload`` is the unsigned message (a list of envelopes, an ack, an operator's fleet
instruction or a site's heartbeat: see :mod:`edge_runtime.fleet`). The receiver
verifies the signature before it reads anything in the body; ``kind`` keeps an ack from
passing as an uplink message and back; ``site`` names the signer (for an ack, the site it is
for); ``ts`` lets the receiver refuse a replayed message (see the core's replay window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_runtime.errors import DecodeError
from edge_runtime.identity.keys import key_id

__all__ = ["Kind", "Sealed", "Sealer", "is_sealed", "open_sealed"]

Kind = Literal["uplink", "ack", "fleet", "heartbeat"]
_MARK = "sealed"


class Sealer:
    """Seals messages with one private key; ``ts`` grows strictly from one message to the
    next (the wall clock in microseconds, or the last value plus one)."""

    def __init__(self, key: Ed25519PrivateKey, site: str) -> None:
        self._key = key
        self.site = site
        self.kid = key_id(key.public_key())
        self._last_ts = 0

    def __repr__(self) -> str:  # never the key
        return f"Sealer(site={self.site!r}, kid={self.kid!r})"

    def _next_ts(self) -> int:
        ts = max(time.time_ns() // 1000, self._last_ts + 1)
        self._last_ts = ts
        return ts

    def seal(self, kind: Kind, payload: bytes, *, site: str | None = None) -> bytes:
        body: bytes = msgpack.packb(
            {
                "kind": kind,
                "site": site or self.site,
                "kid": self.kid,
                "ts": self._next_ts(),
                "payload": payload,
            },
            use_bin_type=True,
        )
        sealed: bytes = msgpack.packb(
            {_MARK: 1, "body": body, "sig": self._key.sign(body)}, use_bin_type=True
        )
        return sealed


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed message as received; :meth:`verify` before trusting any field."""

    body: bytes
    sig: bytes
    kind: str
    site: str
    kid: str
    ts: int
    payload: bytes

    def verify(self, public: Ed25519PublicKey) -> None:
        """Raises :class:`DecodeError` (``bad_signature``) unless ``public`` signed the body."""
        try:
            public.verify(self.sig, self.body)
        except InvalidSignature as exc:
            raise DecodeError(
                "bad_signature", f"signature does not verify (kid {self.kid})"
            ) from exc


def is_sealed(payload: bytes) -> bool:
    """Whether ``payload`` looks like a sealed message (a msgpack map of three entries)."""
    return payload[:1] == b"\x83"


def open_sealed(payload: bytes, kind: Kind) -> Sealed:
    """Parse (not verify) a sealed message; :class:`DecodeError` (``malformed_sealed``,
    ``wrong_kind``) for anything else."""
    try:
        outer: Any = msgpack.unpackb(payload, raw=False)
        if not isinstance(outer, dict) or outer.get(_MARK) != 1:
            raise ValueError("not a sealed message")
        body, sig = outer["body"], outer["sig"]
        if not isinstance(body, bytes) or not isinstance(sig, bytes):
            raise ValueError("body and sig must be bytes")
        doc: Any = msgpack.unpackb(body, raw=False)
        if not isinstance(doc, dict):
            raise ValueError("the body is not a map")
        fields = (doc["kind"], doc["site"], doc["kid"], doc["ts"], doc["payload"])
        if not (
            isinstance(fields[0], str)
            and isinstance(fields[1], str)
            and isinstance(fields[2], str)
            and type(fields[3]) is int
            and isinstance(fields[4], bytes)
        ):
            raise ValueError("a body field has the wrong type")
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_sealed", str(exc)) from exc
    if fields[0] != kind:
        raise DecodeError("wrong_kind", f"a sealed {fields[0]!r} message where {kind!r} belongs")
    return Sealed(body, sig, *fields)
