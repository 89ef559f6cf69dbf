"""Sources: where messages enter a site. The site broker's subscriptions (over the MQTT link
in :mod:`edge_runtime.mqtt`) feed a bounded ingest queue; the topic matcher says which pipelines
a topic belongs to. Camera frames come in through :mod:`edge_runtime.camera`."""

from edge_runtime.sources.config import IngestConfig, OverflowPolicy
from edge_runtime.sources.queue import IngestQueue
from edge_runtime.sources.topics import TopicMatcher

__all__ = ["IngestConfig", "IngestQueue", "OverflowPolicy", "TopicMatcher"]
