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
    """The spool refuses new records; ``reason`` says why, as a short stable label:

    ``spool_full``
        it is at its size cap and ``drop_policy = "reject_new"``;
    ``disk_full``
        the disk under it is full (it still deletes what the core acknowledged, and takes
        records again once there is room).

    ``retry_after`` is a hint in seconds; space frees up as the sender drains the backlog.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        retry_after: float = 1.0,
        reason: str = "spool_full",
    ):
        self.retry_after = retry_after
        self.reason = reason
        super().__init__(message, path=path)


class SpoolClosedError(SpoolError):
    """The spool was used before ``open()`` or after ``close()``."""
