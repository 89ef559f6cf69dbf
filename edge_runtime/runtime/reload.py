"""Hot reload: a running site takes another validated config without a restart.

Under the runtime's emit lock (between two batches, never during a plugin call), pipeline by
pipeline:

* **unchanged** (same name, same validated config): the slot and its plugin instance stay,
  with their open windows, key table and counters;
* **changed** (same name, another config): the old instance's :meth:`Pipeline.snapshot` goes
  to a new instance's :meth:`Pipeline.restore` when both are the same plugin type; what the
  new config cannot take is reported as dropped (the windows plugin keeps open windows when
  the window geometry is the same). A plugin without the state API, a type change, or state
  the new instance cannot read: the old instance is flushed (its open windows go out as
  partial results) and the new one starts empty;
* **removed**: flushed, as at a clean stop without checkpoints: its open windows go out as
  partial results, nothing is dropped silently;
* **added**: a new instance, empty.

Parts: a window open across a reload that flushes its pipeline's old instance is cut in two,
as by a clean stop without checkpoints (see :mod:`~edge_runtime.runtime.checkpointing`), so
both halves are *parts* of the window, each with a number of its own from the data dir's start
counter (:func:`~edge_runtime.runtime.checkpointing.fresh_start`, counted durably before
anything changes; at most two counts per reload, none when nothing is flushed or started
empty). Before its flush every old instance flushed is told one number ``r``
(:meth:`Pipeline.start_fresh <edge_runtime.pipelines.api.Pipeline.start_fresh>`, stateful or
not, with ``maybe_lost_before`` the reload time), so its open windows go out flagged as part
``r`` at revision ``r * REEMIT_REVISION_STRIDE``; every new instance that starts empty is told
another number ``q``: what it emits of windows that start before the reload (it has not seen
their earlier readings) is part ``q``. Two different results of one window never share an
envelope id, and the core keeps the parts side by side. An instance that took its
predecessor's state goes on as its predecessor did (the parts of this run's start, if any);
so does a rollback, which is a reload back to the previous config.

The ingest queue, the spool, the uplink and its sequence numbers are not touched. Topic
filters a new pipeline needs are subscribed at once; filters no pipeline needs any more stay
subscribed until the next restart (their messages are counted as ``unexpected_topic``).

Settings that a running site cannot change (brokers, data dir, identity, spool, ops, the
ingest queue, ...) make a reload fail with the list of fields: restart the site to apply them.

After the switch the site must become *healthy* within the timeout: ready (``/readyz``), no
pipeline isolated (``ops.pipeline_error_limit``), and every added or changed pipeline has
taken input without raising. Otherwise the caller rolls back with the same handover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_runtime.config.loader import LoadedConfig
from edge_runtime.errors import TransportError
from edge_runtime.pipelines.api import PipelineConfig, RestoreInfo
from edge_runtime.runtime.checkpointing import fresh_start, supports_state
from edge_runtime.runtime.revision import site_revision
from edge_runtime.runtime.slots import PipelineSlot
from edge_runtime.sources.topics import minimal_filters

if TYPE_CHECKING:  # the runtime calls these with itself; no import at run time
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["LIVE_FIELDS", "Handover", "apply_config", "restart_only", "wait_healthy"]

log = logging.getLogger(__name__)

LIVE_FIELDS = frozenset(
    {
        "pipelines",
        "ingest.batch_max",
        "ingest.batch_wait_ms",
        "ingest.extra_subscriptions",
        "checkpoint.interval_s",
        "fleet.heartbeat_interval_s",
        "fleet.health_timeout_s",
    }
)
"""The config fields a reload applies to a running site; any other change needs a restart."""


@dataclass
class Handover:
    """What one reload did, pipeline by pipeline."""

    kept: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """one line per part of a changed pipeline's state that the new config could not take"""
    flushed: dict[str, int] = field(default_factory=dict)
    """pipeline -> summaries its old instance emitted as partial results"""
    watched: list[PipelineSlot] = field(default_factory=list)
    """the new instances (added or changed), whose health decides the reload"""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
            "dropped": self.dropped,
            "flushed": self.flushed,
        }

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("kept", self.kept),
                ("changed", self.changed),
                ("added", self.added),
                ("removed", self.removed),
            )
            if names
        ]
        return "; ".join(parts) or "no pipeline"


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
    elif old != new:
        out.append(path)


def restart_only(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """The fields that differ between ``old`` and ``new`` and that only a restart applies."""
    changed: list[str] = []
    _diff(
        old.site.model_dump(mode="json", exclude={"pipelines"}),
        new.site.model_dump(mode="json", exclude={"pipelines"}),
        "",
        changed,
    )
    if [str(p) for p in old.site.plugin_paths] != [str(p) for p in new.site.plugin_paths]:
        changed.append("plugin_paths")
    return sorted({f for f in changed if f not in LIVE_FIELDS})


def _same(old: PipelineConfig, new: PipelineConfig) -> bool:
    return old.type == new.type and old.model_dump(mode="json") == new.model_dump(mode="json")


async def _flush(runtime: SiteRuntime, slot: PipelineSlot, handover: Handover) -> None:
    """Retire an old instance: a stream stage is closed first; what it holds goes out."""
    if slot.pipeline.input_kind == "stream":
        await runtime.stop_stream(slot)
    out = await slot.call("flush", slot.pipeline.flush)
    handover.flushed[slot.name] = len(out or ())
    if out:
        await runtime.submit(slot.name, out)


async def _hand_over(
    runtime: SiteRuntime, old: PipelineSlot, new: PipelineSlot, handover: Handover
) -> bool:
    """The state of ``old`` into ``new``, as far as it fits (see the module docstring); False
    when none was handed over: then ``old`` is to be flushed and ``new`` starts empty."""
    name = old.name
    movable = (
        old.pipeline.config.type == new.pipeline.config.type
        and supports_state(old.pipeline)
        and supports_state(new.pipeline)
        and old.pipeline.input_kind != "stream"
    )
    data = await old.call("snapshot", old.pipeline.snapshot) if movable else None
    if data is None:
        return False
    info = RestoreInfo(clean=True, written_at=runtime.clock.time())
    try:
        notes = new.pipeline.restore(data, info)
    except Exception as exc:  # noqa: BLE001 - ValueError: state it cannot read; else a bug
        if not isinstance(exc, ValueError):
            new.failed("restore", exc)
        handover.dropped.append(
            f"pipeline {name}: the new config could not take its state ({exc}); its open "
            "windows were flushed as partial results"
        )
        return False
    for note in notes:
        handover.dropped.append(f"pipeline {name}: {note}")
        new.pipeline.context.count("restore_dropped")
    return True


async def _number_parts(runtime: SiteRuntime, at: float, *groups: list[PipelineSlot]) -> None:
    """Give each group of instances that a reload at ``at`` flushes or starts empty a part
    number of its own (see the module docstring), all counted on the data dir before any is
    told; an empty group takes none."""
    data_dir = runtime.config.data_dir
    infos = [await asyncio.to_thread(fresh_start, data_dir, at) if g else None for g in groups]
    for group, info in zip(groups, infos, strict=True):
        if info is not None:
            runtime.start_fresh(group, info)


async def apply_config(runtime: SiteRuntime, new: LoadedConfig) -> Handover:
    """Switch the running site to ``new`` (see the module docstring). The caller has checked
    :func:`restart_only`; plugin errors are the slots' (counted, never raised)."""
    handover = Handover()
    revision = await asyncio.to_thread(site_revision, new)  # reads model files
    async with runtime.emit_lock:
        at = runtime.clock.time()
        old_slots = {slot.name: slot for slot in runtime.slots}
        slots: list[PipelineSlot] = []
        handed: list[PipelineSlot] = []  # new instances that took their predecessor's state
        empty: list[PipelineSlot] = []  # new instances that start empty
        retired: list[PipelineSlot] = []  # old instances to flush
        for config in new.pipelines:
            old = old_slots.pop(config.name, None)
            if old is not None and _same(old.pipeline.config, config):
                handover.kept.append(config.name)
                slots.append(old)
                continue
            slot = runtime.make_slot(config, new)
            if old is None:
                handover.added.append(config.name)
                empty.append(slot)
            else:
                handover.changed.append(config.name)
                if await _hand_over(runtime, old, slot, handover):
                    handed.append(slot)
                else:
                    retired.append(old)
                    empty.append(slot)
            handover.watched.append(slot)
            slots.append(slot)
        for old in old_slots.values():
            handover.removed.append(old.name)
            retired.append(old)
        await _number_parts(runtime, at, retired, empty)
        for old in retired:
            await _flush(runtime, old, handover)
        runtime.install(new, slots, revision)
        runtime.start_fresh(handed)  # they go on as their predecessors did: this run's start
        for slot in handover.watched:
            if slot.pipeline.input_kind == "stream":
                runtime.start_stream(slot)
    for line in handover.dropped:
        log.warning("reload dropped %s", line)
    for name, n in handover.flushed.items():
        log.info("reload: pipeline %s flushed %d partial summaries", name, n)
    await _subscribe(runtime, new)
    return handover


def _covers(wide: str, narrow: str) -> bool:
    """Whether every topic that filter ``narrow`` matches also matches filter ``wide``."""
    a, b = wide.split("/"), narrow.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(b) or b[i] == "#" or (level != "+" and level != b[i]):
            return False
    return len(a) == len(b)


async def _subscribe(runtime: SiteRuntime, new: LoadedConfig) -> None:
    """Subscribe to the filters the new pipelines need that no subscription covers yet."""
    link = runtime.site_link
    if link is None:
        return
    wanted = minimal_filters(
        [t for slot in runtime.slots for t in slot.pipeline.config.topics]
        + new.site.ingest.extra_subscriptions
    )
    have = link.subscriptions
    more = [f for f in wanted if not any(_covers(s, f) for s in have)]
    overlap = [s for s in have for f in more if _covers(f, s)]
    if overlap:
        log.warning(
            "reload: new topic filters %s cover the subscriptions %s; the broker may deliver "
            "such messages twice until the next restart",
            more,
            overlap,
        )
    try:
        await link.add_subscriptions(more)
    except TransportError as exc:  # kept: subscribed again at the next connection
        log.warning("reload: subscribing to %s failed for now: %s", more, exc)


async def wait_healthy(
    runtime: SiteRuntime, watched: Sequence[PipelineSlot], timeout: float
) -> tuple[bool | None, str]:
    """Whether the site becomes healthy within ``timeout`` after a reload: (True, why),
    (False, the reason to roll back), or (None, why) when the site is stopping meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        isolated = [
            f"pipeline {s.name} isolated: {s.isolated}" for s in runtime.slots if s.isolated
        ]
        if isolated:
            return False, "; ".join(isolated)
        ready, why = runtime.ready()
        idle = [s.name for s in watched if s.processed == 0]
        if ready and not idle:
            taken = ", ".join(f"{s.name} {s.processed}" for s in watched)
            return True, f"healthy: {why}" + (f"; messages taken: {taken}" if taken else "")
        if runtime.stopping:
            return None, "the site is stopping"
        if time.monotonic() >= deadline:
            problems = [] if ready else [why]
            if idle:
                problems.append(
                    f"no input taken by {', '.join(idle)} (their topics had no messages, or "
                    "every batch failed)"
                )
            return False, f"not healthy within {timeout:g} s: " + "; ".join(problems)
        await asyncio.sleep(0.1)
