"""The core side: receiving site summaries, dropping duplicates, storing and forwarding."""

from edge_runtime.core.config import CoreConfig, NatsForwardConfig
from edge_runtime.core.progress import SiteProgress
from edge_runtime.core.receiver import CoreReceiver
from edge_runtime.core.store import SummaryStore

__all__ = ["CoreConfig", "CoreReceiver", "NatsForwardConfig", "SiteProgress", "SummaryStore"]
