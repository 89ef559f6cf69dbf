"""Durable checkpoints of pipeline state: the config and the file they live in."""

from edge_runtime.checkpoint.config import CheckpointConfig
from edge_runtime.checkpoint.store import Checkpoint, CheckpointFile, StartCounter, fingerprints

__all__ = ["Checkpoint", "CheckpointConfig", "CheckpointFile", "StartCounter", "fingerprints"]
