"""Errors raised by the spool; all derive from :class:`SpoolError`."""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError

__all__ = ["SpoolClosedError", "SpoolError", "SpoolFullError"]


class SpoolError(EdgeRuntimeError):
    """The spool could not store, read or recover records.

    ``path`` names the database file concerned (when known).
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class SpoolFullError(SpoolError):
    """The spool is at its size cap and ``drop_policy = "reject_new"`` refuses new records.

    ``retry_after`` is a hint in seconds; space frees up as the sender drains the backlog.
    """

    def __init__(self, message: str, *, path: str | None = None, retry_after: float = 1.0):
        self.retry_after = retry_after
        super().__init__(message, path=path)


class SpoolClosedError(SpoolError):
    """The spool was used before ``open()`` or after ``close()``."""
