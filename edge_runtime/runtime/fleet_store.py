"""What the fleet agent keeps in ``<data_dir>/fleet``: the applied bundle and its state.

``bundle.sealed``
    the operator's sealed bytes of the bundle the site runs, exactly as they arrived; the
    agent verifies them again at every start (signature, group, runtime version, models,
    config) before it runs them.
``state.json``
    ``{"last_serial", "last_outcome", "last_reason", "running_serial",
    "local_hash_at_bundle"}``: the newest serial seen and its outcome (so that a retained
    bundle refused or rolled back is not tried again after a restart), and the hash of the
    local file's managed tables when the bundle was applied (drift).

Both are replaced atomically and fsynced (temporary file, rename, directory fsync).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

__all__ = ["BUNDLE_FILE", "STATE_FILE", "FleetStore"]

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.sealed"
STATE_FILE = "state.json"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FleetStore:
    """``<data_dir>/fleet`` (see the module docstring); blocking: call off the event loop
    once the site runs."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "fleet"
        self.bundle_path = self.dir / BUNDLE_FILE
        self.state_path = self.dir / STATE_FILE

    def read_bundle(self) -> bytes | None:
        """The persisted bundle's bytes, None when there is none (OSError: unreadable)."""
        try:
            return self.bundle_path.read_bytes()
        except FileNotFoundError:
            return None

    def read_state(self) -> dict[str, Any]:
        """The persisted state; empty when there is none or it is unreadable (logged)."""
        try:
            doc = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s); starting without it", self.state_path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def write(self, state: dict[str, Any], bundle: bytes | None = None) -> None:
        """Persist ``state`` (and, when given, the bundle now running) durably."""
        if bundle is not None:
            _write_atomic(self.bundle_path, bundle)
        _write_atomic(self.state_path, orjson.dumps(state, option=orjson.OPT_INDENT_2))
