"""Brokers the runtime starts itself (embedded default, tests, demo)."""

from edge_runtime.broker.embedded import EmbeddedBroker, MosquittoProcess, free_port, wait_port

__all__ = ["EmbeddedBroker", "MosquittoProcess", "free_port", "wait_port"]
