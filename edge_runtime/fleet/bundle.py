"""A revision bundle: what the operator wants a group of sites to run, signed by the operator.

``edge-runtime fleet publish`` seals a bundle with the operator key (``operator.key`` in the
site registry); each site verifies it with the ``operator.pub`` it pinned at provisioning
before it reads a field. A bundle carries

* ``group`` and ``serial``: the group it is for and a number that grows with every bundle the
  operator signs (microseconds at signing). A site refuses a serial not above the one it runs,
  so an old signed bundle replayed cannot downgrade it; a rollback is a new bundle with the old
  content and a new serial.
* ``config``: a TOML document with the fleet-managed tables only (:data:`MANAGED_KEYS`); the
  site keeps its own identity, brokers, data dir, spool and ops settings and lays these tables
  over its local config. Any other key is refused.
* ``runtime_version``: the exact runtime version the site must be; ``models``: model file name
  -> sha256 the site's files must have (a bundle never carries weights).
* ``health_timeout_s``: how long the site waits to be healthy after applying before it rolls
  back to its last good revision.

On the wire it is a sealed message (:mod:`edge_runtime.identity.sealed`) of kind ``fleet``
whose payload is the msgpack map ``{"type": "bundle", ...fields}``; a rollback request is
``{"type": "rollback", "group", "serial"}`` in the same envelope.
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.errors import DecodeError
from edge_runtime.identity.sealed import Sealer, open_sealed

__all__ = [
    "MANAGED_KEYS",
    "OPERATOR",
    "Bundle",
    "RollbackRequest",
    "managed_hash",
    "open_bundle",
    "open_fleet_message",
]

MANAGED_KEYS = ("pipelines", "ingest", "checkpoint")
"""The top-level config keys a bundle sets; every other key stays the site's own."""
OPERATOR = "operator"
"""The signer name in the sealed body of an operator's message."""


def managed_hash(doc: Mapping[str, Any]) -> str:
    """The fleet-managed part of a raw (parsed, not validated) config document, hashed: a
    site running bundle B reports ``managed_hash`` equal to B's."""
    part = {key: doc.get(key) for key in MANAGED_KEYS}
    return hashlib.sha256(orjson.dumps(part, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Bundle:
    group: str
    serial: int
    config: str
    runtime_version: str
    models: Mapping[str, str] = field(default_factory=dict)
    health_timeout_s: float = 30.0
    issued_at: float = 0.0

    def document(self) -> dict[str, Any]:
        """The config tables this bundle sets (raises :class:`DecodeError` ``bad_config``
        for TOML that does not parse or sets a key a bundle may not set)."""
        try:
            doc = tomllib.loads(self.config)
        except tomllib.TOMLDecodeError as exc:
            raise DecodeError("bad_config", f"the bundle's config is not TOML: {exc}") from exc
        extra = sorted(set(doc) - set(MANAGED_KEYS))
        if extra:
            raise DecodeError(
                "bad_config",
                f"a bundle may set only {', '.join(MANAGED_KEYS)}; it sets {', '.join(extra)}",
            )
        return doc

    @property
    def managed_hash(self) -> str:
        return managed_hash(self.document())

    def seal(self, operator: Sealer) -> bytes:
        payload = msgpack.packb(
            {
                "type": "bundle",
                "group": self.group,
                "serial": self.serial,
                "config": self.config,
                "runtime_version": self.runtime_version,
                "models": dict(self.models),
                "health_timeout_s": float(self.health_timeout_s),
                "issued_at": float(self.issued_at or time.time()),
            },
            use_bin_type=True,
        )
        return operator.seal("fleet", payload)


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    group: str
    serial: int

    def seal(self, operator: Sealer) -> bytes:
        payload = msgpack.packb(
            {"type": "rollback", "group": self.group, "serial": self.serial}, use_bin_type=True
        )
        return operator.seal("fleet", payload)


def open_fleet_message(payload: bytes, operator: Ed25519PublicKey) -> Bundle | RollbackRequest:
    """Verify and parse an operator's message. Raises :class:`DecodeError` with the reason:
    ``malformed_sealed``, ``wrong_kind``, ``bad_signature``, ``malformed_bundle``."""
    sealed = open_sealed(payload, "fleet")
    sealed.verify(operator)
    try:
        doc: Any = msgpack.unpackb(sealed.payload, raw=False)
        if not isinstance(doc, dict):
            raise TypeError("the payload is not a map")
        if doc.get("type") == "rollback":
            group, serial = doc["group"], doc["serial"]
            if not isinstance(group, str) or type(serial) is not int:
                raise TypeError("group is a string and serial an integer")
            return RollbackRequest(group, serial)
        if doc.get("type") != "bundle":
            raise TypeError(f"unknown fleet message type {doc.get('type')!r}")
        bundle = Bundle(
            group=doc["group"],
            serial=doc["serial"],
            config=doc["config"],
            runtime_version=doc["runtime_version"],
            models=doc["models"],
            health_timeout_s=doc["health_timeout_s"],
            issued_at=doc["issued_at"],
        )
        if not (
            isinstance(bundle.group, str)
            and type(bundle.serial) is int
            and isinstance(bundle.config, str)
            and isinstance(bundle.runtime_version, str)
            and isinstance(bundle.models, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in bundle.models.items())
            and isinstance(bundle.health_timeout_s, float)
            and bundle.health_timeout_s > 0
            and isinstance(bundle.issued_at, float)
        ):
            raise TypeError("a bundle field has the wrong type")
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_bundle", str(exc)) from exc
    return bundle


def open_bundle(payload: bytes, operator: Ed25519PublicKey) -> Bundle:
    """:func:`open_fleet_message` for a place where only a bundle belongs."""
    message = open_fleet_message(payload, operator)
    if not isinstance(message, Bundle):
        raise DecodeError("malformed_bundle", "a rollback request where a bundle belongs")
    return message
