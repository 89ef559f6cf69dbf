"""The pipeline plugin API.

A plugin is a small synchronous class: it receives a batch and returns summaries.  It never
touches the network, the event loop or the wall clock directly: the runtime injects a
:class:`PipelineContext` with a clock, a logger and counters.  Its configuration is a pydantic
model derived from :class:`PipelineConfig` whose ``type`` field is a ``Literal`` naming the plugin.

Example::

    class ThresholdConfig(PipelineConfig):
        type: Literal["threshold"] = "threshold"
        limit: float = Field(description="Readings above this value raise an alert.")

    class ThresholdPipeline(Pipeline[ThresholdConfig]):
        type_name = "threshold"
        config_model = ThresholdConfig

        def process(self, batch: ReadingBatch) -> list[Summary]:
            ...
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_runtime.clock import Clock
from edge_runtime.decode.spec import DecodeSpec
from edge_runtime.types import KeyTable, RawMessage, ReadingBatch, Summary

__all__ = [
    "InputKind",
    "Pipeline",
    "PipelineConfig",
    "PipelineContext",
    "RestoreInfo",
    "SubmitFn",
]

InputKind = Literal["readings", "messages", "stream"]
SubmitFn = Callable[[Sequence[Summary]], Awaitable[None]]


class PipelineConfig(BaseModel):
    """Fields every pipeline has. Plugins subclass it and narrow ``type`` to a ``Literal``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Which plugin runs this pipeline (its registered type name).")
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Unique name of the pipeline on this site; appears in summaries and metrics.",
    )
    topics: list[str] = Field(
        min_length=1,
        description="MQTT topic filters (wildcards + and # allowed) whose messages feed this "
        "pipeline.",
    )
    decode: DecodeSpec = Field(
        default_factory=DecodeSpec,
        description="How readings (key, value, event time) are taken out of each payload. "
        "Ignored by pipelines that take raw messages.",
    )

    def weight_files(self, base_dir: Path) -> dict[str, Path]:
        """Files this pipeline loads that belong to the site's revision (model weights):
        file name -> path, a relative path taken relative to ``base_dir`` (the config file's
        folder). The fleet reports their sha256 and refuses a bundle that expects others.
        None by default; a plugin that loads such files overrides it."""
        del base_dir
        return {}

    @field_validator("topics")
    @classmethod
    def _check_filters(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            levels = topic.split("/")
            for i, level in enumerate(levels):
                if "#" in level and (level != "#" or i != len(levels) - 1):
                    raise ValueError(f"{topic!r}: '#' must be a whole, last level (a/b/#)")
                if "+" in level and level != "+":
                    raise ValueError(f"{topic!r}: '+' must be a whole level (a/+/c)")
        return topics


@dataclass(frozen=True, slots=True)
class RestoreInfo:
    """What the runtime knows about the checkpoint a plugin's state comes back from.

    ``clean`` is True when the previous run stopped cleanly (SIGTERM) and checkpointed last;
    False after a crash, when input received after the checkpoint is processed again from the
    broker. ``maybe_lost_before`` is set after a crash when QoS 0 input (which no broker
    redelivers) may have been lost: results that could have held such input should be flagged
    as possibly incomplete. It is a site-clock time: input received before it may be missing.
    """

    clean: bool
    written_at: float
    maybe_lost_before: float | None = None
    reemit_revision: int = 0
    """Set with ``maybe_lost_before``: a result this state emits may have been emitted already
    (after the checkpoint, before the crash) from input that is now lost, so emitted again it
    may differ. Results of the restored state must then carry at least this revision, so that
    two different results of one window never share an envelope id (the core keeps the
    highest revision). It grows with every such restore."""
    part: int = 0
    """Set for :meth:`Pipeline.start_fresh` (no state carried over): this run's number on its
    data dir (1 for the first start). A window an earlier run flushed half-way at a stop is
    emitted again by this run with the readings it still gets: a second *part* of the
    window. Each part is flagged ``incomplete`` and carries ``attrs["part"]`` (the number of
    the run that emitted it); the core stores the parts of a window side by side, never one
    instead of another, so their counts and sums add up to the window's."""


class PipelineContext:
    """What the runtime gives a plugin: identity, a clock, a logger, event counters, and
    ``base_dir``, the folder of the site config, against which relative paths resolve.

    ``count(event, n)`` increments a counter the runtime exports as
    ``edge_pipeline_events_total{pipeline=..., event=...}``. ``key_table`` is the table the
    runtime's decoder interns this pipeline's keys into (a plugin restoring state re-interns
    its key names there, so that the codes of new batches match its own).
    """

    def __init__(
        self,
        *,
        site_id: str,
        pipeline: str,
        clock: Clock,
        base_dir: Path | None = None,
        key_table: KeyTable | None = None,
    ) -> None:
        self.site_id = site_id
        self.base_dir = base_dir or Path.cwd()  # the config file's folder: resolve paths here
        self.pipeline = pipeline
        self.clock = clock
        self.log = logging.getLogger(f"edge_runtime.pipeline.{pipeline}")
        self.counters: Counter[str] = Counter()
        self.key_table = key_table if key_table is not None else KeyTable()

    def count(self, event: str, n: int = 1) -> None:
        if n:
            self.counters[event] += n


ConfigT = TypeVar("ConfigT", bound=PipelineConfig)


class Pipeline(abc.ABC, Generic[ConfigT]):
    """Base class of all pipeline plugins.

    Class attributes a plugin sets:

    * ``type_name``: the name used in the ``type`` field of the config;
    * ``config_model``: its :class:`PipelineConfig` subclass;
    * ``input_kind``: ``"readings"`` (default: the runtime decodes payloads into a
      :class:`ReadingBatch`), ``"messages"`` (the plugin gets the raw messages in batches) or
      ``"stream"`` (the plugin has its own stage: the runtime hands it each message with
      ``offer`` and runs its ``run`` coroutine as a task; for camera analytics, which batches
      frames across cameras under a deadline and keeps only the latest frame per camera);
    * ``blocking``: ``True`` when ``process`` does heavy work that releases the GIL (inference);
      the runtime then calls it in a worker thread, off the event loop.
    """

    type_name: ClassVar[str]
    config_model: ClassVar[type[PipelineConfig]]
    input_kind: ClassVar[InputKind] = "readings"
    blocking: ClassVar[bool] = False

    def __init__(self, config: ConfigT, context: PipelineContext) -> None:
        self.config = config
        self.context = context

    @property
    def name(self) -> str:
        return self.config.name

    def process(self, batch: ReadingBatch) -> Sequence[Summary]:
        """Consume one batch of readings; return the summaries it completes."""
        raise NotImplementedError(f"{type(self).__name__} takes readings but defines no process()")

    def process_messages(self, messages: Sequence[RawMessage]) -> Sequence[Summary]:
        """Consume one batch of raw messages (plugins with ``input_kind = "messages"``)."""
        raise NotImplementedError(
            f"{type(self).__name__} takes messages but defines no process_messages()"
        )

    def offer(self, message: RawMessage) -> None:
        """Stream plugins: take one message (cheap, non-blocking; may replace an older one)."""
        raise NotImplementedError(f"{type(self).__name__} is a stream plugin without offer()")

    async def run(self, submit: SubmitFn) -> None:
        """Stream plugins: process offered messages until :meth:`close`; hand results to
        ``submit``. Blocking work must run in threads, never on the event loop."""
        raise NotImplementedError(f"{type(self).__name__} is a stream plugin without run()")

    def close(self) -> None:
        """Stream plugins: stop accepting messages; ``run`` finishes what it holds and returns."""

    async def settle(self) -> None:
        """Stream plugins: return once every message offered so far has been processed.

        A replay calls it before offering a second message on the same topic, so that a stage
        that keeps only the latest message (cameras) drops nothing and the summaries do not
        depend on the replay speed."""

    def on_tick(self, now: float) -> Sequence[Summary]:
        """Called about once a second with the injected clock's time, also when idle."""
        del now
        return ()

    def flush(self) -> Sequence[Summary]:
        """Called once on shutdown: emit whatever is still open."""
        return ()

    def snapshot(self) -> bytes | None:
        """The plugin's state as bytes, or None when it keeps no state worth restoring.

        With ``[checkpoint] enabled`` the runtime calls it between batches (never during
        ``process``) about every ``checkpoint.interval_s`` and on a clean stop, and stores the
        bytes durably; input is acknowledged to the site broker only once a checkpoint covering
        it is on disk. Keep it compact (numpy arrays, not one object per reading): it runs on
        the event loop. A plugin that returns None (the default) keeps the old behaviour: its
        ``flush`` runs on a clean stop and whatever it held is lost in a crash."""
        return None

    def restore(self, data: bytes, info: RestoreInfo) -> Sequence[str]:
        """Take back the state :meth:`snapshot` returned, before the first batch; return
        one line per part that no longer fits the current config and was dropped (an empty
        list: everything was restored). Raise ``ValueError`` when ``data`` cannot be read;
        the runtime then starts the pipeline empty and says so."""
        del data, info
        raise NotImplementedError(f"{type(self).__name__} snapshots state but cannot restore it")

    def start_fresh(self, info: RestoreInfo) -> None:
        """Called before the first batch when no checkpoint carries this plugin's state into
        the run (``[checkpoint] enabled = false``, or no :meth:`snapshot`), so that
        :meth:`flush` cuts its open windows at every clean stop. ``info.part`` numbers this
        run; ``info.maybe_lost_before`` is set (to the start time) when an earlier run on the
        same data dir may have emitted part of a window that starts before it, with
        ``info.reemit_revision`` above every revision that run used. A plugin that emits
        windows should flag what it emits of those windows, and what :meth:`flush` cuts, as
        parts (see :attr:`RestoreInfo.part`). The default does nothing.

        A hot reload calls it too, with or without checkpoints, with a new part number and
        ``maybe_lost_before`` set to the reload time: on an instance it is about to
        :meth:`flush` (its pipeline was removed, or changed without a state handover), and on
        a new instance that starts empty mid-run (added, or changed without a handover),
        which has not seen the earlier readings of the windows open at the reload. It may
        thus come more than once, and after batches: the latest ``info`` holds."""
        del info

    def gauges(self) -> dict[str, float]:
        """Point-in-time figures exported as ``edge_pipeline_gauge{pipeline, name}``."""
        return {}

    def correction_horizon_s(self) -> float | None:
        """How long after a window's end this pipeline may still emit a correction of it;
        None when it never corrects. The site keeps the spool from compacting summaries younger
        than the largest horizon, so that a correction never finds its window already merged
        into a coarser one (the core would then count the window's data twice)."""
        return None
