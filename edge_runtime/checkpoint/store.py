"""One checkpoint file, replaced atomically: written beside, fsynced, renamed, folder fsynced.

Layout: a magic line, a 4-byte length and a JSON header (sequence number, time, whether the
run stopped cleanly, whether QoS 0 input was seen, how many restores followed a crash, each
pipeline's blob length), the pipeline
blobs, the dedupe fingerprints (uint64), and a BLAKE2b digest of all that. A file whose
digest does not match is refused as a whole (:class:`CheckpointError`), never half-read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.types import RawMessage

__all__ = ["Checkpoint", "CheckpointError", "CheckpointFile", "StartCounter", "fingerprints"]

log = logging.getLogger(__name__)

_MAGIC = b"EDGE-CHECKPOINT 1\n"
_DIGEST = 32
Fingerprints = npt.NDArray[np.uint64]


class CheckpointError(EdgeRuntimeError):
    """A checkpoint file that cannot be read (damaged or from an unknown version)."""


def fingerprints(messages: Sequence[RawMessage]) -> Fingerprints:
    """64-bit fingerprints of QoS 1 messages: CRC-32 of the topic and of the payload."""
    crc = zlib.crc32
    return np.fromiter(
        ((crc(m.topic.encode()) << 32) | crc(m.payload) for m in messages if m.qos),
        dtype=np.uint64,
    )


@dataclass
class Checkpoint:
    """Pipeline states (by pipeline name) and what the runtime needs to resume after them.

    ``dedupe`` holds the fingerprints of QoS 1 messages the states count whose PUBACK may not
    have reached the broker: a redelivery (DUP set) matching one is not counted again.
    """

    seq: int
    written_at: float
    clean: bool
    qos0_seen: bool
    unclean_restores: int = 0
    """How many times a run restored from a checkpoint after a crash (raises the revisions of
    results emitted again after one, see :class:`~edge_runtime.pipelines.api.RestoreInfo`)."""
    states: dict[str, bytes] = field(default_factory=dict)
    dedupe: Fingerprints = field(default_factory=lambda: np.empty(0, dtype=np.uint64))

    def encode(self) -> bytes:
        names = sorted(self.states)
        header = json.dumps(
            {
                "seq": self.seq,
                "written_at": self.written_at,
                "clean": self.clean,
                "qos0_seen": self.qos0_seen,
                "unclean_restores": self.unclean_restores,
                "states": [[n, len(self.states[n])] for n in names],
                "dedupe": int(self.dedupe.shape[0]),
            }
        ).encode()
        body = b"".join(
            [
                _MAGIC,
                len(header).to_bytes(4, "big"),
                header,
                *(self.states[n] for n in names),
                self.dedupe.astype("<u8").tobytes(),
            ]
        )
        return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        body, digest = data[:-_DIGEST], data[-_DIGEST:]
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4 + _DIGEST:
            raise CheckpointError("not a checkpoint file (or from an unknown version)")
        if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
            raise CheckpointError("checkpoint digest mismatch: the file is damaged")
        at = len(_MAGIC)
        size = int.from_bytes(body[at : at + 4], "big")
        at += 4
        try:
            header = json.loads(body[at : at + size])
            at += size
            states: dict[str, bytes] = {}
            for name, length in header["states"]:
                states[str(name)] = body[at : at + length]
                at += length
            count = int(header["dedupe"])
            dedupe = np.frombuffer(body[at : at + 8 * count], dtype="<u8").astype(np.uint64)
            return cls(
                seq=int(header["seq"]),
                written_at=float(header["written_at"]),
                clean=bool(header["clean"]),
                qos0_seen=bool(header["qos0_seen"]),
                unclean_restores=int(header.get("unclean_restores", 0)),
                states=states,
                dedupe=dedupe,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint header unreadable: {exc!r}") from exc


class CheckpointFile:
    """``<data_dir>/checkpoint/state.ckpt``. ``write`` blocks on fsync: run it in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "checkpoint"
        self.path = self.folder / "state.ckpt"

    def read(self) -> Checkpoint | None:
        """The last checkpoint written, or None when there is none."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return Checkpoint.decode(data)

    def remove(self) -> None:
        """Delete the checkpoint durably (the folder fsynced); blocks: run it in a thread."""
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.folder)

    def write(self, checkpoint: Checkpoint) -> int:
        """Write durably (file and folder fsynced); returns the bytes written."""
        data = checkpoint.encode()
        _replace_durably(self.path, data)
        return len(data)


class StartCounter:
    """``<data_dir>/checkpoint/starts``: how many times a site runtime started on this data
    dir, kept whether checkpoints are on or off. A run that flushes open windows at a stop
    numbers them with it (see :class:`~edge_runtime.pipelines.api.RestoreInfo`). ``bump``
    blocks on fsync: run it in a thread.

    The numbers only have to differ from every earlier one. A damaged file is set aside
    (``starts.damaged``) and the count goes on from the clock (milliseconds since the epoch,
    above any count kept here); a count that cannot be saved (a full disk) is replaced by such
    a clock number too, so that the next start, which reads the old count, cannot reuse it.
    Neither stops a site from starting."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "checkpoint" / "starts"

    def bump(self, *, used_before: bool = False) -> int:
        """Count this start; returns its number (1 for the first start). Without the file,
        ``used_before`` (a runtime already ran on this data dir: a release that did not count
        starts) counts that earlier run, so this start is number 2: what it emits of windows
        the earlier run may have flushed half-way goes out as another part, under other ids."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = "1" if used_before else "0"
        except (OSError, UnicodeDecodeError) as exc:
            text = f"unreadable ({exc})"
        if text.isdigit():
            n = int(text) + 1
        else:
            n = _clock_number()
            aside = self.path.with_name("starts.damaged")
            log.error(
                "%s holds %r, not a start count: set aside as %s; this start is number %d "
                "(from the clock, above any earlier one)",
                self.path,
                text[:40],
                aside.name,
                n,
            )
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                log.error("cannot set %s aside: %s", self.path, exc)
        try:
            _replace_durably(self.path, f"{n}\n".encode("ascii"))
        except OSError as exc:
            n = max(n, _clock_number())
            log.error(
                "cannot save the start count in %s (%s): this start is number %d, from the "
                "clock, so that the next start (which reads the old count) cannot reuse it",
                self.path,
                exc.strerror or exc,
                n,
            )
        return n


def _clock_number() -> int:
    return int(time.time() * 1000)


def _replace_durably(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path``, fsync, rename over it, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or an unlink in ``folder`` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
