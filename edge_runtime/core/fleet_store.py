"""The fleet view kept across core restarts, in the core's SQLite database (its own
connection, its own tables): each site's newest heartbeat and the bundle rolled out to it,
exactly as signed (opened and verified again when loaded), and each group's rollout.

Writes are grouped: the fleet manager hands over what changed about once a second and
:meth:`FleetStore.save` writes it in one transaction, in a thread. The fleet view is not
data of record (the next heartbeats rebuild it), so it is committed with
``synchronous=NORMAL``: durable across a crash of the core, not necessarily a power cut.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FleetChanges", "FleetStore", "Saved"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_heartbeats (
    site TEXT PRIMARY KEY, payload BLOB NOT NULL, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_desired (
    site TEXT PRIMARY KEY, serial INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_groups (
    grp TEXT PRIMARY KEY, serial INTEGER NOT NULL, payload BLOB NOT NULL, rollout BLOB
);
"""


@dataclass
class FleetChanges:
    """What changed since the last save (the newest value of each)."""

    heartbeats: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    desired: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    groups: dict[str, tuple[int, bytes, dict[str, Any] | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.heartbeats or self.desired or self.groups)


@dataclass
class Saved:
    """What :meth:`FleetStore.load` found (signed payloads still to be verified)."""

    heartbeats: Mapping[str, tuple[bytes, float]]
    desired: Mapping[str, tuple[int, bytes]]
    groups: Mapping[str, tuple[int, bytes, dict[str, Any] | None]]


class FleetStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=10000")  # the summary store writes beside us
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def load(self) -> Saved:
        heartbeats = {
            site: (bytes(payload), float(at))
            for site, payload, at in self.db.execute(
                "SELECT site, payload, received_at FROM fleet_heartbeats"
            )
        }
        desired = {
            site: (int(serial), bytes(payload))
            for site, serial, payload in self.db.execute(
                "SELECT site, serial, payload FROM fleet_desired"
            )
        }
        groups = {
            grp: (int(serial), bytes(payload), orjson.loads(rollout) if rollout else None)
            for grp, serial, payload, rollout in self.db.execute(
                "SELECT grp, serial, payload, rollout FROM fleet_groups"
            )
        }
        return Saved(heartbeats, desired, groups)

    def save(self, changes: FleetChanges) -> None:
        """One transaction (BEGIN IMMEDIATE); call it off the event loop."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR REPLACE INTO fleet_heartbeats VALUES (?,?,?)",
                [(s, p, at) for s, (p, at) in changes.heartbeats.items()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO fleet_desired VALUES (?,?,?)",
                [(s, serial, p) for s, (serial, p) in changes.desired.items()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO fleet_groups VALUES (?,?,?,?)",
                [
                    (g, serial, p, orjson.dumps(r) if r is not None else None)
                    for g, (serial, p, r) in changes.groups.items()
                ],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
