"""The site runtime: site broker → ingest queue → micro-batches → pipelines → uplink.

Every long-lived piece is an async context manager; every loop is a named task in one
``asyncio.TaskGroup``. The hot loop takes whole micro-batches from the bounded ingest queue
and hands them to the :class:`~edge_runtime.runtime.dispatch.Dispatcher`, which routes them to
pipelines by topic, decodes each pipeline's share into numpy arrays in one call and hands the
batch to the plugin. Every call of a plugin goes through its slot's guard (see ``slots``);
summaries the uplink refuses are counted by reason and the site goes on.

Beside this module: ``links`` (the brokers and the two MQTT links), ``status`` (``/readyz``,
``/status``, gauges), ``checkpointing`` (pipeline state, and the PUBACKs held for it),
``reload`` and ``fleet_agent`` (new configs without a restart, through :meth:`SiteRuntime.install`
and the other hooks below).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from edge_runtime.clock import Clock, ManualClock, SystemClock
from edge_runtime.config.loader import LoadedConfig
from edge_runtime.decode.decoders import ReadingDecoder
from edge_runtime.fleet import Revision
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.ops.http import OpsServer
from edge_runtime.ops.stats import RuntimeStats, StatsCollector
from edge_runtime.pipelines.api import Pipeline, PipelineContext, RestoreInfo
from edge_runtime.runtime.checkpointing import Checkpointer, fresh_start
from edge_runtime.runtime.dispatch import Dispatcher
from edge_runtime.runtime.fleet_agent import FleetAgent
from edge_runtime.runtime.links import site_link, start_brokers, uplink_link
from edge_runtime.runtime.lock import DataDirLock
from edge_runtime.runtime.revision import site_revision
from edge_runtime.runtime.slots import PipelineSlot
from edge_runtime.runtime.status import readiness, register_gauges, status_document
from edge_runtime.runtime.wiring import default_uplink
from edge_runtime.sources.queue import IngestQueue
from edge_runtime.sources.topics import minimal_filters
from edge_runtime.types import KeyTable, RawMessage, Summary
from edge_runtime.uplink.base import Uplink

__all__ = ["MessageSource", "SiteRuntime"]

log = logging.getLogger(__name__)

UplinkFactory = Callable[["SiteRuntime", MqttLink], Uplink]
MessageSource = AsyncIterable[tuple[Sequence[RawMessage], float]]
"""Batches of messages with the (recorded) time at the end of each: a replayed recording."""


class SiteRuntime:
    """Runs one site from a :class:`LoadedConfig` until :meth:`stop` is called."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock | None = None,
        uplink_factory: UplinkFactory | None = None,
        source: MessageSource | None = None,
    ) -> None:
        self._source = source
        self.clock = clock or (ManualClock() if source is not None else SystemClock())
        # the fleet agent: a persisted bundle's managed tables run over the local config
        self.fleet = FleetAgent(self, loaded)
        loaded = self.fleet.startup_config()
        self.loaded = loaded
        self.config = loaded.site
        self.revision = site_revision(loaded)
        self.stats = RuntimeStats(started_at=self.clock.time())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(self.stats, self.config.site_id))
        self.registry.register(self.fleet.collector())
        self.queue = IngestQueue(self.config.ingest.queue_size, self.config.ingest.overflow)
        slots = [self.make_slot(p) for p in loaded.pipelines]
        for slot in slots:
            self.stats.pipeline_events[slot.name] = slot.pipeline.context.counters
            self.stats.pipeline_gauges[slot.name] = slot.gauges
        self._streams: dict[PipelineSlot, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._uplink_factory = uplink_factory or default_uplink
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self.site_link: MqttLink | None = None
        self.uplink_link: MqttLink | None = None
        self.uplink: Uplink | None = None
        self.ops: OpsServer | None = None
        self._emit_lock = asyncio.Lock()  # pipeline calls + spool appends vs. snapshots
        self.checkpointer: Checkpointer | None = None
        self.fresh: RestoreInfo | None = None  # this start, for pipelines started without state
        if self.config.checkpoint.enabled and source is None:
            self.checkpointer = Checkpointer(
                self.config.checkpoint,
                self.config.data_dir,
                [slot.pipeline for slot in slots],
                clock=self.clock,
                always_qos0=self.config.ingest.qos == 0,
            )
        self.dispatcher = Dispatcher(
            slots,
            self.stats,
            self.queue,
            checkpointer=self.checkpointer,
            replayed=source is not None,
        )
        register_gauges(self)

    @property
    def slots(self) -> list[PipelineSlot]:
        """The running pipelines, in config order (a reload replaces them: :meth:`install`)."""
        return self.dispatcher.slots

    def make_slot(self, config: Any, loaded: LoadedConfig | None = None) -> PipelineSlot:
        """A new instance of the pipeline ``config`` names, in its slot (``loaded``: the
        config it belongs to, when not the running one: a reload)."""
        loaded = loaded or self.loaded
        cls = loaded.registry[config.type]
        keys = KeyTable()  # shared by the decoder and the plugin (which restores into it)
        ctx = PipelineContext(
            site_id=self.config.site_id,
            pipeline=config.name,
            clock=self.clock,
            base_dir=loaded.base_dir,
            key_table=keys,
        )
        # a pipeline that a reload replaces goes on counting where its predecessor stopped
        ctx.counters = self.stats.pipeline_events.get(config.name, ctx.counters)
        pipeline = cls(config, ctx)
        return PipelineSlot(
            pipeline,
            ReadingDecoder(config.decode, keys),
            stats=self.stats,
            error_limit=self.config.ops.pipeline_error_limit,
        )

    def install(
        self, loaded: LoadedConfig, slots: Sequence[PipelineSlot], revision: Revision
    ) -> None:
        """Make ``loaded`` with ``slots`` (one per pipeline, in its order) the running config,
        whose revision is ``revision``; called by a reload under the emit lock, between
        batches: every summary accepted from now on carries the new revision. The reload has
        told the new instances which part of their windows they emit (:meth:`start_fresh`)."""
        self.loaded, self.config, self.revision = loaded, loaded.site, revision
        if self.uplink is not None:
            self.uplink.revise(loaded.config_hash, revision.id)
        self.dispatcher.set_slots(slots)
        names = {slot.name for slot in self.slots}
        for name in set(self.stats.pipeline_events) - names:
            del self.stats.pipeline_events[name]
            self.stats.pipeline_gauges.pop(name, None)
            self.stats.pipelines_isolated.pop(name, None)
        for slot in self.slots:
            self.stats.pipeline_events[slot.name] = slot.pipeline.context.counters
            self.stats.pipeline_gauges[slot.name] = slot.gauges
            if slot.isolated is None:
                self.stats.pipelines_isolated.pop(slot.name, None)
        if self.checkpointer is not None:
            self.checkpointer.reconfigure(loaded.site.checkpoint)
            self.checkpointer.set_pipelines([slot.pipeline for slot in self.slots])

    def start_fresh(self, slots: Sequence[PipelineSlot], info: RestoreInfo | None = None) -> None:
        """Tell the pipelines of ``slots`` which part of their windows they emit
        (:meth:`Pipeline.start_fresh`): ``info`` (a reload's part number, see
        :mod:`~edge_runtime.runtime.reload`), or else this run's start (:attr:`fresh`), told
        only to those that no checkpoint carries (they are flushed at a stop)."""
        if info is None:
            stateful = set() if self.checkpointer is None else set(self.checkpointer.pipelines)
            slots = [slot for slot in slots if slot.pipeline not in stateful]
            info = self.fresh
        if info is None:
            return
        for slot in slots:
            try:
                slot.pipeline.start_fresh(info)
            except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the site
                slot.failed("start_fresh", exc)

    async def _restore_left_behind(self) -> list[Pipeline[Any]]:
        """With checkpoints off: the state an earlier run's checkpoint holds, restored once
        (see :meth:`Checkpointer.restore_left_behind`)."""
        if self.checkpointer is not None:
            return []
        once = Checkpointer(
            self.config.checkpoint,
            self.config.data_dir,
            [slot.pipeline for slot in self.slots],
            clock=self.clock,
            always_qos0=self.config.ingest.qos == 0,
        )
        return await once.restore_left_behind(self.site_link)

    def start_stream(self, slot: PipelineSlot) -> None:
        """Run a stream plugin's stage as a task of the runtime's group."""
        assert self._tg is not None, "the runtime is not running"
        self._streams[slot] = self._tg.create_task(
            slot.run_stream(functools.partial(self.submit, slot.name)),
            name=f"stream-{slot.name}",
        )

    async def stop_stream(self, slot: PipelineSlot) -> None:
        """Close a stream plugin's stage and wait until it has handed over what it held."""
        await slot.call("close", slot.pipeline.close, always=True)
        task = self._streams.pop(slot, None)
        if task is not None:
            await task

    async def submit(self, name: str, summaries: Sequence[Summary]) -> None:
        """Hand pipeline ``name``'s summaries to the uplink (see
        :meth:`Dispatcher.submit <edge_runtime.runtime.dispatch.Dispatcher.submit>`)."""
        await self.dispatcher.submit(name, summaries)

    @property
    def emit_lock(self) -> asyncio.Lock:
        """Held while pipelines are called and their summaries appended (and by a reload)."""
        return self._emit_lock

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def replaying(self) -> bool:
        """Whether the site runs a recording (a ``source``) instead of its site broker."""
        return self._source is not None

    # -- public control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a clean drain and shutdown (what SIGTERM/SIGINT do)."""
        self._stop.set()
        self.fleet.wake()

    def reload(self) -> None:
        """Reload the local config file without a restart (what SIGHUP does); see
        :mod:`edge_runtime.runtime.fleet_agent`."""
        self.fleet.request_reload()

    async def wait_started(self) -> None:
        await self._started.wait()

    def ready(self) -> tuple[bool, str]:
        """``/readyz``: see :func:`~edge_runtime.runtime.status.readiness`."""
        return readiness(self)

    def status(self) -> dict[str, Any]:
        """``/status``: see :func:`~edge_runtime.runtime.status.status_document`."""
        return status_document(self)

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        async with AsyncExitStack() as stack:
            lock = stack.enter_context(DataDirLock(cfg.data_dir))  # before anything connects
            site_broker, uplink_broker = await start_brokers(stack, cfg)
            self.uplink_link = uplink_link(
                cfg,
                uplink_broker,
                subscriptions=[
                    *cfg.uplink.ack_subscriptions(cfg.site_id),
                    *self.fleet.subscriptions(),
                ],
                sink=self._from_core,
            )
            # the uplink first: the link may bring the core's acknowledgements at once
            self.uplink = await stack.enter_async_context(
                self._uplink_factory(self, self.uplink_link)
            )
            self.dispatcher.uplink = self.uplink
            await stack.enter_async_context(self.uplink_link)
            self.stats.uplink = self.uplink.stats
            if cfg.ops.http_enabled:
                self.ops = await stack.enter_async_context(
                    OpsServer(
                        cfg.ops.http_host,
                        cfg.ops.http_port,
                        self.registry,
                        ready=self.ready,
                        status=self.status,
                        token=cfg.ops.token(),
                    )
                )
            topics = minimal_filters(
                [t for slot in self.slots for t in slot.pipeline.config.topics]
                + cfg.ingest.extra_subscriptions
            )
            checkpointer = self.checkpointer
            if self._source is None:
                manual_ack = checkpointer is not None and checkpointer.holds_pubacks(
                    site_broker, cfg.ingest.qos
                )
                self.site_link = await stack.enter_async_context(
                    site_link(
                        cfg,
                        site_broker,
                        topics=topics,
                        sink=self.queue.put,
                        on_oversized=self._oversized,
                        manual_ack=manual_ack,
                    )
                )
            if self._source is None:  # input waits in the queue until this is done
                self.fresh = await asyncio.to_thread(
                    fresh_start, cfg.data_dir, self.clock.time(), used_before=lock.used_before
                )
                carried = await self._restore_left_behind()
                self.start_fresh([s for s in self.slots if s.pipeline not in carried])
                if self.fresh is not None and carried:  # their windows were not cut: no marks
                    cut_at_stop = replace(self.fresh, maybe_lost_before=None, reemit_revision=0)
                    self.start_fresh([s for s in self.slots if s.pipeline in carried], cut_at_stop)
            if checkpointer is not None:
                await checkpointer.restore_at_start(self.site_link, self._emit_lock)
            log.info(
                "site %s running %d pipeline(s): %s",
                cfg.site_id,
                len(self.slots),
                ", ".join(s.name for s in self.slots),
            )
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for slot in self.slots:
                    if slot.pipeline.input_kind == "stream":
                        self.start_stream(slot)
                fleet = None
                if self._source is None:
                    fleet = tg.create_task(self.fleet.run(), name="fleet-agent")
                if self._source is None:
                    process = tg.create_task(self._process_loop(), name="pipelines")
                else:
                    process = tg.create_task(self._source_loop(self._source), name="replay")
                sender = tg.create_task(self.uplink.run(), name="uplink-sender")
                ticker = tg.create_task(self._tick_loop(), name="pipeline-ticks")
                checkpoints = None
                if checkpointer is not None:
                    checkpoints = tg.create_task(self._checkpoint_loop(), name="checkpoints")
                self._started.set()
                await self._stop.wait()
                if fleet is not None:
                    await fleet  # a reload under way finishes (or stops its health wait)
                await self._wind_down(process, ticker, checkpoints)
                left = await self.uplink.drain(cfg.uplink.drain_timeout_s)
                sender.cancel()
            log.info(
                "stopped: %d messages in, %d summaries out, %d unsent",
                self.stats.messages_in,
                sum(self.stats.summaries_out.values()),
                left,
            )

    async def _wind_down(
        self,
        process: asyncio.Task[None],
        ticker: asyncio.Task[None],
        checkpoints: asyncio.Task[None] | None,
    ) -> None:
        """Stop reading, let the pipelines finish what they hold (checkpointed or flushed)."""
        log.info("draining: stop reading, flush pipelines, hand summaries to the core")
        self.queue.close()  # what comes now stays unacknowledged, for the next start
        if self.site_link is not None and not self.site_link.manual_ack:
            await self.site_link.close()
        await process
        for slot in self.slots:
            if slot.pipeline.input_kind == "stream":
                await slot.call("close", slot.pipeline.close, always=True)
        for stream in list(self._streams.values()):
            await stream
        async with self._emit_lock:  # never between a tick's emission and its append
            ticker.cancel()
        if checkpoints is not None:
            await checkpoints  # it stops at _stop; a write under way finishes
        await self._stop_pipelines()
        if self.site_link is not None:
            await self.site_link.close()

    async def _stop_pipelines(self) -> None:
        """Clean stop: plugins with the state API are checkpointed (their open windows carry
        over to the next start); the others flush what they hold, as partial results."""
        checkpointer = self.checkpointer
        stateful = set() if checkpointer is None else set(checkpointer.pipelines)
        async with self._emit_lock:
            for slot in self.slots:
                if slot.pipeline not in stateful:
                    out = await slot.call("flush", slot.pipeline.flush)
                    if out:
                        await self.dispatcher.submit(slot.name, out)
        if checkpointer is not None:
            await checkpointer.checkpoint(self._emit_lock, clean=True)
            log.info(
                "checkpoint %d written at stop: %s carry their open windows to the next start",
                checkpointer.seq,
                ", ".join(p.name for p in checkpointer.pipelines) or "no pipeline",
            )

    async def _checkpoint_loop(self) -> None:
        checkpointer = self.checkpointer
        assert checkpointer is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):  # the interval a reload may change
                await asyncio.wait_for(self._stop.wait(), checkpointer.config.interval_s)
            if self._stop.is_set():
                break
            try:
                await checkpointer.checkpoint(self._emit_lock)
            except OSError:
                # input stays unacknowledged (the broker keeps it); try again next interval
                log.exception("checkpoint %d could not be written", checkpointer.seq)

    # -- hot loop ----------------------------------------------------------------------------

    def _from_core(self, message: RawMessage) -> None:
        """What the uplink link receives: the site's desired bundle goes to the fleet agent,
        the core's acknowledgements to the uplink."""
        if self.fleet.receive(message):
            return
        if self.uplink is not None:
            self.uplink.receive(message)

    def _oversized(self, message: RawMessage) -> None:
        del message
        self.stats.messages_in += 1
        self.stats.ingest_dropped["oversized"] += 1

    async def _process_loop(self) -> None:
        checkpointer = self.checkpointer
        lock = self._emit_lock  # also keeps a reload from swapping pipelines mid-batch
        while True:
            ingest = self.config.ingest  # a reload may change the batch settings
            batch = await self.queue.get_batch(ingest.batch_max, ingest.batch_wait_ms / 1000.0)
            if not batch:
                break  # the queue was closed and is empty
            async with lock:
                batch = batch if checkpointer is None else checkpointer.admit(batch)
                await self.dispatcher.dispatch(batch)
        self.stats.ingest_dropped["overflow"] = self.queue.dropped

    async def _source_loop(self, source: MessageSource) -> None:
        """Feed a recording through the same routing, decoders and pipelines as live traffic.

        Batches and the clock come from the source (recorded time), and pipelines are ticked
        after each batch at that time, so the same recording always gives the same summaries,
        whatever the replay speed."""
        clock = self.clock
        assert isinstance(clock, ManualClock), "a replay source needs a ManualClock"
        async for batch, at in source:
            if self._stop.is_set():
                log.info("replay stopped before the end of the recording")
                break
            clock.set(at)
            if batch:
                await self.dispatcher.dispatch_settled(batch)
            await self.dispatcher.emit_all("on_tick", operator.methodcaller("on_tick", at))
        log.info("replay source finished")
        self._stop.set()

    async def _tick_loop(self) -> None:
        if self._source is not None:
            return  # a replay ticks on recorded time, from _source_loop
        interval = self.config.ops.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            async with self._emit_lock:
                now = self.clock.time()
                await self.dispatcher.emit_all("on_tick", operator.methodcaller("on_tick", now))
