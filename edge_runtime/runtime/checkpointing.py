"""Checkpoints of pipeline state, and the acknowledgements and dedupe that hang on them.

Order, for exactly-once window results with QoS 1 input:

1. every batch is processed and the summaries it completes are appended to the spool (durable
   on return) under the runtime's emit lock, so a snapshot never sees an emission whose
   summary is not in the spool yet;
2. about every ``checkpoint.interval_s`` (and on a clean stop) the pipelines' snapshots are
   taken under that lock, with the messages they cover since the previous one;
3. the checkpoint is written (atomically replaced file, fsynced) in a thread;
4. only then are the covered messages acknowledged to the site broker
   (``MqttLink.ack_through`` the last QoS 1 one); after a crash the broker redelivers the rest.

Revisions: after a crash with QoS 0 input, a window the lost run emitted after its last
checkpoint is emitted again without the input that was lost, so with another result. Each
such restore is counted in the checkpoint (``unclean_restores``, written at once, before any
input) and the pipelines are asked to emit what they restored at revision
``unclean_restores * REEMIT_REVISION_STRIDE`` or higher (:class:`RestoreInfo`): the core keeps
that result and counts the earlier one superseded. With QoS 1 input nothing is lost; what is
emitted again equals what was emitted before and keeps its id (the core drops the duplicate).

Parts: a pipeline no checkpoint carries (checkpoints off, or no state API) is flushed at a
clean stop, half-way through its open windows. Every start is counted in the data dir
(:func:`fresh_start`, also with checkpoints off) and such pipelines are told the count
(``Pipeline.start_fresh``): what they flush, and what they emit of windows that start before
this start, are *parts* of those windows, flagged and numbered, at revision ``starts *
REEMIT_REVISION_STRIDE`` or higher; the core keeps the parts of a window side by side. A hot
reload that flushes a pipeline's old instance cuts its open windows the same way, stateful
or not: it counts a start for the old instances it flushes and another for the new ones that
start empty, and tells each its number (see :mod:`~edge_runtime.runtime.reload`).

Dedupe: a checkpoint keeps the fingerprints (CRC-32 of topic and payload) of the QoS 1
messages it counts whose PUBACK may not have reached the broker (those since the last
acknowledgement that went out). A redelivery (DUP flag set) that matches one is not counted
again, after a restart and after a reconnect alike. A message without the DUP flag is never
dropped, so a sensor sending the same payload twice is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.checkpoint import (
    Checkpoint,
    CheckpointConfig,
    CheckpointFile,
    StartCounter,
    fingerprints,
)
from edge_runtime.checkpoint.store import CheckpointError
from edge_runtime.clock import Clock
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.pipelines.api import Pipeline, RestoreInfo
from edge_runtime.types import RawMessage

__all__ = ["REEMIT_REVISION_STRIDE", "Checkpointer", "fresh_start", "supports_state"]

log = logging.getLogger(__name__)
_dup = operator.attrgetter("dup")
_RESTORE_WAIT_S = 10.0  # longest wait for the site broker before a lossy restore

REEMIT_REVISION_STRIDE = 1000
"""Revisions a restore after a crash skips: more than any window is corrected in the
checkpoint interval before a crash, so a result emitted again is above every earlier one."""


def supports_state(pipeline: Pipeline[Any]) -> bool:
    """Whether a plugin implements the state API (overrides ``snapshot``)."""
    return type(pipeline).snapshot is not Pipeline.snapshot


def fresh_start(data_dir: Path, now: float, *, used_before: bool = False) -> RestoreInfo:
    """Count this start on ``data_dir`` (durably: blocks on fsync, run it in a thread) and
    say what it means for the pipelines no checkpoint carries over
    (:meth:`Pipeline.start_fresh <edge_runtime.pipelines.api.Pipeline.start_fresh>`): after
    an earlier start, a window starting before ``now`` may have been flushed half-way by
    that run, so what this run emits of it is another part, at revision ``starts *
    REEMIT_REVISION_STRIDE`` or higher (a new envelope id). ``used_before``: a runtime ran on
    ``data_dir`` before (see :meth:`StartCounter.bump`). A reload at ``now`` that flushes
    old instances or starts new ones empty counts one for each side in the same way (after
    this run's own start, so ``maybe_lost_before`` is ``now``)."""
    part = StartCounter(data_dir).bump(used_before=used_before)
    earlier = part > 1
    return RestoreInfo(
        clean=True,
        written_at=now,
        maybe_lost_before=now if earlier else None,
        reemit_revision=part * REEMIT_REVISION_STRIDE if earlier else 0,
        part=part,
    )


class Checkpointer:
    """The checkpoints of one site runtime's stateful pipelines."""

    def __init__(
        self,
        config: CheckpointConfig,
        data_dir: Path,
        pipelines: Sequence[Pipeline[Any]],
        *,
        clock: Clock,
        always_qos0: bool,
    ) -> None:
        self.config = config
        self.file = CheckpointFile(data_dir)
        self.pipelines = [p for p in pipelines if supports_state(p)]
        self.clock = clock
        self.link: MqttLink | None = None
        self.seq = 0
        self.written = 0
        self.bytes_written = 0
        self.redelivered_dropped = 0
        self.acks_released = 0
        self.restored_from: int | None = None
        self.restored_clean: bool | None = None
        self.unclean_restores = 0
        self.must_write = False  # a restore whose count must be durable before any input
        self.dropped: list[str] = []
        self.restored: list[Pipeline[Any]] = []  # those whose state the checkpoint gave back
        self._qos0_seen = always_qos0
        self._current: list[RawMessage] = []
        self._unconfirmed: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
        self._seen: set[int] | None = None
        self._seen_upto = 0
        self._dirty = False
        self._writing = asyncio.Lock()
        self._loaded: tuple[Checkpoint | None] | None = None

    def reconfigure(self, config: CheckpointConfig) -> None:
        """The ``[checkpoint]`` table after a reload (``interval_s`` is live): the checkpoint
        loop and :meth:`status` read it from here."""
        self.config = config

    def set_pipelines(self, pipelines: Sequence[Pipeline[Any]]) -> None:
        """The pipelines after a reload (under the emit lock): the next checkpoint holds the
        state of those that support it, and no longer that of pipelines a reload removed."""
        self.pipelines = [p for p in pipelines if supports_state(p)]
        self._dirty = True

    # -- start -------------------------------------------------------------------------------

    def holds_pubacks(self, broker: BrokerConfig, qos: int) -> bool:
        """Whether the site broker link (``broker``, input at ``qos``) should hold PUBACKs
        until a checkpoint covers the message: a stateful pipeline, QoS 1, a client that can
        hold them, and a session that outlives us."""
        if not self.pipelines:
            return False
        if qos != 1:
            return False
        if broker.transport != "gmqtt" or broker.clean_start:
            log.warning(
                "checkpoints on, but the site broker link acknowledges input on receipt "
                "(transport %s, clean_start %s): after a crash, input received since the last "
                'checkpoint is lost. Set site_broker.transport = "gmqtt" and clean_start = '
                "false for exactly-once window results.",
                broker.transport,
                broker.clean_start,
            )
            return False
        return True

    async def restore_at_start(self, link: MqttLink | None, lock: asyncio.Lock) -> None:
        """Restore the last checkpoint before the first batch is processed. After a crash
        with QoS 0 input, once the site broker ``link`` is up (bounded): what was published
        before then may be lost, and the restored windows say so. From then on the link's
        input is acknowledged by the checkpoints, when it holds PUBACKs."""
        await self._wait_for_link(link)
        self.restore()
        if self.must_write:  # the restore's count, durable before any input
            await self.checkpoint(lock)
        if link is not None and link.manual_ack:
            self.link = link

    async def restore_left_behind(self, link: MqttLink | None) -> list[Pipeline[Any]]:
        """Checkpoints are off in this run, but an earlier run left a checkpoint: the open
        windows in it hold readings the site broker will not deliver again (they were
        acknowledged once the checkpoint was written). Restore it once, as at a start with
        checkpoints on, then delete it: from now on these pipelines are flushed at a stop, and
        the next start must not count the same readings again. Returns the pipelines whose
        state came back. (Redeliveries after a crash are not recognised: no checkpoint keeps
        their fingerprints from now on.)"""
        if not self.file.path.exists():
            return []
        await self._wait_for_link(link)
        self.restore()
        await asyncio.to_thread(self.file.remove)
        log.warning(
            "checkpoints are off, but the last run left a checkpoint: restored the open "
            "windows of %d pipeline(s) from it (%s) and removed it; from now on they are "
            "flushed at a stop",
            len(self.restored),
            ", ".join(p.name for p in self.restored) or "none",
        )
        return self.restored

    async def _wait_for_link(self, link: MqttLink | None) -> None:
        if link is not None and self.may_have_lost_input():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESTORE_WAIT_S):
                    await link.wait_connected()

    def _read(self) -> Checkpoint | None:
        if self._loaded is None:
            try:
                self._loaded = (self.file.read(),)
            except (CheckpointError, OSError) as exc:
                self._drop(f"the whole checkpoint {self.file.path}: {exc}; starting empty")
                self._loaded = (None,)
        return self._loaded[0]

    def may_have_lost_input(self) -> bool:
        """Whether the last run crashed with QoS 0 input, which no broker redelivers: then
        :meth:`restore` should wait until the site broker link is up, so that the time it
        takes as "input may be missing before" covers what was published meanwhile."""
        ckpt = self._read()
        return ckpt is not None and not ckpt.clean and ckpt.qos0_seen

    def restore(self) -> None:
        """Load the last checkpoint into the pipelines (before any input is processed)."""
        ckpt = self._read()
        if ckpt is None:
            return
        self.seq = ckpt.seq
        self.restored_from = ckpt.seq
        self.restored_clean = ckpt.clean
        self.unclean_restores = ckpt.unclean_restores
        lost = None if ckpt.clean or not ckpt.qos0_seen else self.clock.time()
        reemit = 0
        if lost is not None:
            self.unclean_restores += 1
            self.must_write = True
            reemit = self.unclean_restores * REEMIT_REVISION_STRIDE
        info = RestoreInfo(
            clean=ckpt.clean,
            written_at=ckpt.written_at,
            maybe_lost_before=lost,
            reemit_revision=reemit,
        )
        for pipeline in self.pipelines:
            data = ckpt.states.pop(pipeline.name, None)
            if data is None:
                continue
            try:
                notes = pipeline.restore(data, info)
            except ValueError as exc:
                self._drop(f"pipeline {pipeline.name}: its state ({exc}); it starts empty")
                continue
            self.restored.append(pipeline)
            for note in notes:
                self._drop(f"pipeline {pipeline.name}: {note}")
                pipeline.context.count("restore_dropped")
        for name in sorted(ckpt.states):
            self._drop(f"pipeline {name}: its state; no stateful pipeline of that name now")
        if ckpt.dedupe.shape[0]:
            self._unconfirmed.append(ckpt.dedupe)
        log.info(
            "restored checkpoint %d (%s stop, written at %.3f): %d pipeline(s), %d message "
            "fingerprint(s) to recognise redeliveries by%s",
            ckpt.seq,
            "clean" if ckpt.clean else "unclean",
            ckpt.written_at,
            len(self.pipelines),
            int(ckpt.dedupe.shape[0]),
            f"; QoS 0 input may have been lost, open windows are flagged incomplete and "
            f"emitted at revision {reemit} or higher"
            if lost is not None
            else "",
        )

    def _drop(self, what: str) -> None:
        self.dropped.append(what)
        log.warning("checkpoint restore dropped %s", what)

    # -- hot path ----------------------------------------------------------------------------

    def admit(self, batch: list[RawMessage]) -> list[RawMessage]:
        """Note ``batch`` as covered by the next checkpoint; return it without redeliveries
        already counted. Called under the emit lock, just before the batch is processed."""
        self._dirty = True
        start = len(self._current)
        self._current.extend(batch)
        if not self._qos0_seen and any(m.qos == 0 for m in batch):
            self._qos0_seen = True
        if not any(map(_dup, batch)):
            return batch
        seen = self._seen_set(start)
        kept: list[RawMessage] = []
        for message in batch:
            if message.dup and message.qos:
                fp = int(fingerprints((message,))[0])
                if fp in seen:
                    self.redelivered_dropped += 1
                    continue
            kept.append(message)
        return kept

    def _seen_set(self, upto: int) -> set[int]:
        """Fingerprints of what the state counts but may not be acknowledged: unconfirmed
        segments and the current one up to ``upto``."""
        if self._seen is None:
            self._seen = set()
            for segment in self._unconfirmed:
                self._seen.update(segment.tolist())
            self._seen_upto = 0
        if upto > self._seen_upto:
            self._seen.update(fingerprints(self._current[self._seen_upto : upto]).tolist())
            self._seen_upto = upto
        return self._seen

    def note_emitted(self) -> None:
        self._dirty = True

    # -- checkpoints -------------------------------------------------------------------------

    async def checkpoint(self, lock: asyncio.Lock, *, clean: bool = False) -> bool:
        """Snapshot under ``lock``, write durably, then acknowledge what it covers. Returns
        False when there was nothing new to write."""
        async with self._writing:
            async with lock:
                if not self._dirty and not clean and not self.must_write:
                    return False
                self._dirty = self.must_write = False
                states: dict[str, bytes] = {}
                for pipeline in self.pipelines:
                    data = pipeline.snapshot()
                    if data is not None:
                        states[pipeline.name] = data
                if self._seen is not None:
                    self._seen_set(len(self._current))
                covered, self._current = self._current, []
                self._seen_upto = 0
                segment = fingerprints(covered)
                if segment.shape[0]:
                    self._unconfirmed.append(segment)
                last = next((m for m in reversed(covered) if m.qos), None)
                self.seq += 1
                ckpt = Checkpoint(
                    seq=self.seq,
                    written_at=self.clock.time(),
                    clean=clean,
                    qos0_seen=self._qos0_seen,
                    unclean_restores=self.unclean_restores,
                    states=states,
                    dedupe=np.concatenate(self._unconfirmed)
                    if self._unconfirmed
                    else np.empty(0, dtype=np.uint64),
                )
            self.bytes_written = await asyncio.to_thread(self.file.write, ckpt)
            self.written += 1
            if last is not None and self.link is not None:
                released = self.link.ack_through(last)
                self.acks_released += released
                if released:
                    # what the state counts is acknowledged up to here: redeliveries of it
                    # came before ``last`` on this connection and were recognised already
                    self._unconfirmed.clear()
                    self._seen = None
            return True

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "interval_s": self.config.interval_s,
            "stateful_pipelines": [p.name for p in self.pipelines],
            "written": self.written,
            "last_seq": self.seq,
            "last_bytes": self.bytes_written,
            "restored_from": self.restored_from,
            "restored_clean": self.restored_clean,
            "unclean_restores": self.unclean_restores,
            "restore_dropped": list(self.dropped),
            "redelivered_dropped": self.redelivered_dropped,
            "acks_released": self.acks_released,
            "held": self.link.held if self.link is not None else 0,
        }
