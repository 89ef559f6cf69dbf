"""A site's revision: everything that decides what it computes.

A revision is the runtime version, the hash of the site's validated config (the
``config_hash`` every envelope already carries), the pipeline plugins in use with their
distribution versions, the sha256 of each model file, and, in a container, the image's own
record (``/etc/edge-runtime/image.json``, written at image build; see ``containers/``). Its
``id`` is the first 16 hex digits of the sha256 of its canonical JSON: two sites run the same
thing exactly when their ids are equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edge_runtime.errors import DecodeError
from edge_runtime.ops.image import image_info

__all__ = ["Revision", "image_info", "sha256_file"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Revision:
    runtime_version: str
    config_hash: str
    plugins: Mapping[str, str] = field(default_factory=dict)
    """pipeline type -> version of the distribution that provides it"""
    models: Mapping[str, str] = field(default_factory=dict)
    """model file name -> sha256"""
    image: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime_version": self.runtime_version,
            "config_hash": self.config_hash,
            "plugins": dict(sorted(self.plugins.items())),
            "models": dict(sorted(self.models.items())),
            "image": dict(self.image) if self.image is not None else None,
        }

    @property
    def id(self) -> str:
        canonical = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]

    @classmethod
    def from_dict(cls, doc: Any) -> Revision:
        """Raises :class:`DecodeError` (``malformed_revision``) for anything but a revision."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("a revision is a map")
            version, config_hash = doc["runtime_version"], doc["config_hash"]
            plugins, models, image = doc.get("plugins", {}), doc.get("models", {}), doc.get("image")
            if not isinstance(version, str) or not isinstance(config_hash, str):
                raise TypeError("runtime_version and config_hash are strings")
            for name, table in (("plugins", plugins), ("models", models)):
                if not isinstance(table, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in table.items()
                ):
                    raise TypeError(f"{name} maps strings to strings")
            if image is not None and not isinstance(image, dict):
                raise TypeError("image is a map or null")
        except (KeyError, TypeError) as exc:
            raise DecodeError("malformed_revision", str(exc)) from exc
        return cls(version, config_hash, plugins, models, image)
