"""The fleet protocol: what a site runs (its revision), what the operator wants it to run (a
signed bundle), and how the two meet over the core broker (heartbeats, topics).

This package holds only the messages and their checks. The site's side (apply a bundle,
hot reload, roll back, report drift) lives in :mod:`edge_runtime.runtime`; the core's side
(track heartbeats, roll out in waves, the fleet page) in :mod:`edge_runtime.core`.
"""

from edge_runtime.fleet.bundle import Bundle, open_bundle
from edge_runtime.fleet.heartbeat import Heartbeat, Outcome, open_heartbeat
from edge_runtime.fleet.revision import Revision, image_info, sha256_file
from edge_runtime.fleet.topics import (
    bundle_topic,
    desired_topic,
    heartbeat_topic,
    rollback_topic,
)

__all__ = [
    "Bundle",
    "Heartbeat",
    "Outcome",
    "Revision",
    "bundle_topic",
    "desired_topic",
    "heartbeat_topic",
    "image_info",
    "open_bundle",
    "open_heartbeat",
    "rollback_topic",
    "sha256_file",
]
