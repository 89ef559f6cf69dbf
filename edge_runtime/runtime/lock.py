"""One process per site data dir: a lock taken before anything connects.

Two processes on one data dir would share a spool and sequence numbers and, worse, connect to
the brokers with the same client ids and take each other's sessions. The lock is an advisory
``flock`` on ``<data_dir>/site.lock`` (released by the kernel when the process dies, so a
``kill -9`` leaves nothing stale behind); the file holds the owner's pid for the error message.
The file stays after a stop, so :attr:`DataDirLock.used_before` tells whether a runtime ran on
this data dir before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from edge_runtime.errors import EdgeRuntimeError

__all__ = ["DataDirLock"]


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "site.lock"
        self._fd: int | None = None
        self.used_before = False
        """whether the lock file was there before this process took it (a runtime ran here)"""

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.used_before = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EdgeRuntimeError(
                f"the site's data dir {self.path.parent} is in use by another process (pid "
                f"{owner}); stop that site first, or give this one its own data_dir"
            ) from None
        # the pid is only for the message above: written in place, padded to a fixed width (a
        # restart rewrites the block it already has), and a full disk must not keep a site
        # from starting, to drain its spool
        with contextlib.suppress(OSError):
            os.pwrite(fd, f"{os.getpid():<15}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing releases the flock
