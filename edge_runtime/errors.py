"""The exception hierarchy of edge-runtime.

Every error the runtime raises on purpose derives from :class:`EdgeRuntimeError`.  Messages say
what went wrong *and* what to change; causes are always chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EdgeRuntimeError",
    "PluginError",
    "TransportError",
    "UplinkError",
    "UplinkRefusedError",
]


class EdgeRuntimeError(Exception):
    """Root of all errors raised by edge-runtime."""


class ConfigError(EdgeRuntimeError):
    """A site configuration file is missing, unreadable or invalid.

    ``source`` names the file, ``field`` the dotted path of the offending field (when known).
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        prefix = ""
        if source is not None:
            prefix = f"{source}: "
        if field is not None:
            prefix += f"[{field}] "
        super().__init__(prefix + message)


class PluginError(EdgeRuntimeError):
    """A pipeline plugin could not be found, loaded or validated; ``plugin`` names it."""

    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"pipeline plugin {plugin!r}: {message}")


class DecodeError(EdgeRuntimeError):
    """A payload could not be turned into readings.

    ``reason`` is a short stable label (``malformed_json``, ``wrong_type`` ...) used as the
    metrics label; the message carries the detail.
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class TransportError(EdgeRuntimeError):
    """The connection to a broker failed or was lost."""


class UplinkError(EdgeRuntimeError):
    """Summaries could not be handed to the core."""


class UplinkRefusedError(UplinkError):
    """The uplink refused to accept summaries; none of them was accepted.

    ``reason`` is a short stable label used as the metrics label (``disk_full``,
    ``spool_full``, ``spool_error``), ``count`` the summaries refused, ``retry_after`` a hint
    in seconds.
    """

    def __init__(self, message: str, *, reason: str, count: int, retry_after: float = 1.0):
        self.reason = reason
        self.count = count
        self.retry_after = retry_after
        super().__init__(message)
