"""The site runtime: site broker → ingest queue → micro-batches → pipelines → uplink.

Every long-lived piece is an async context manager; every loop is a named task in one
``asyncio.TaskGroup``. The hot loop takes whole micro-batches from the bounded ingest queue,
routes them to pipelines by topic, decodes each pipeline's share into numpy arrays in one call
and hands the batch to the plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
from collections import Counter
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry

from edge_runtime import __version__
from edge_runtime.broker.embedded import EmbeddedBroker
from edge_runtime.clock import Clock, ManualClock, SystemClock
from edge_runtime.config.loader import LoadedConfig
from edge_runtime.decode.decoders import ReadingDecoder
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.ops.http import OpsServer
from edge_runtime.ops.stats import RuntimeStats, StatsCollector
from edge_runtime.pipelines.api import Pipeline, PipelineContext
from edge_runtime.runtime.checkpointing import Checkpointer
from edge_runtime.runtime.lock import DataDirLock
from edge_runtime.sources.queue import IngestQueue
from edge_runtime.sources.topics import TopicMatcher, minimal_filters
from edge_runtime.types import KeyTable, RawMessage, Summary
from edge_runtime.uplink.base import Uplink
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.memory import MemoryUplink
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.seq import SeqAllocator
from edge_runtime.uplink.spool import Spool, SpoolConfig
from edge_runtime.uplink.spooled import SpooledUplink

__all__ = ["MessageSource", "PipelineSlot", "SiteRuntime"]

log = logging.getLogger(__name__)

_payload = operator.attrgetter("payload")
UplinkFactory = Callable[["SiteRuntime", MqttLink], Uplink]
MessageSource = AsyncIterable[tuple[Sequence[RawMessage], float]]
"""Batches of messages with the (recorded) time at the end of each: a replayed recording."""


class PipelineSlot:
    """One configured pipeline with its decoder and topic matcher."""

    def __init__(self, pipeline: Pipeline[Any], decoder: ReadingDecoder) -> None:
        self.pipeline = pipeline
        self.decoder = decoder
        self.matcher = TopicMatcher(pipeline.config.topics)
        self.name = pipeline.name
        self.errors: Counter[str] = Counter()


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
        self.loaded = loaded
        self.config = loaded.site
        self._source = source
        self.clock = clock or (ManualClock() if source is not None else SystemClock())
        self.stats = RuntimeStats(started_at=self.clock.time())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(self.stats, self.config.site_id))
        self.queue = IngestQueue(self.config.ingest.queue_size, self.config.ingest.overflow)
        self.slots = [self._make_slot(p) for p in loaded.pipelines]
        self._routes: dict[str, tuple[PipelineSlot, ...]] = {}
        self._uplink_factory = uplink_factory or default_uplink
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self.site_link: MqttLink | None = None
        self.uplink_link: MqttLink | None = None
        self.uplink: Uplink | None = None
        self.ops: OpsServer | None = None
        self._emit_lock = asyncio.Lock()  # pipeline calls + spool appends vs. snapshots
        self.checkpointer: Checkpointer | None = None
        if self.config.checkpoint.enabled and source is None:
            self.checkpointer = Checkpointer(
                self.config.checkpoint,
                self.config.data_dir,
                [slot.pipeline for slot in self.slots],
                clock=self.clock,
                always_qos0=self.config.ingest.qos == 0,
            )
        self.stats.gauges["ingest_queue_depth"] = lambda: float(len(self.queue))
        self.stats.gauges["ingest_queue_capacity"] = lambda: float(self.queue.capacity)
        self.stats.gauges["site_broker_up"] = lambda: float(
            self.site_link is not None and self.site_link.is_up
        )
        self.stats.gauges["uptime_seconds"] = lambda: self.clock.time() - self.stats.started_at

    def _make_slot(self, config: Any) -> PipelineSlot:
        cls = self.loaded.registry[config.type]
        keys = KeyTable()  # shared by the decoder and the plugin (which restores into it)
        ctx = PipelineContext(
            site_id=self.config.site_id,
            pipeline=config.name,
            clock=self.clock,
            base_dir=self.loaded.base_dir,
            key_table=keys,
        )
        pipeline = cls(config, ctx)
        self.stats.pipeline_events[config.name] = ctx.counters
        self.stats.pipeline_gauges[config.name] = pipeline.gauges
        return PipelineSlot(pipeline, ReadingDecoder(config.decode, keys))

    # -- public control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a clean drain and shutdown (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    def ready(self) -> tuple[bool, str]:
        if self._source is not None:
            return True, "replaying a recording"
        site_up = self.site_link is not None and self.site_link.is_up
        uplink_state = self.uplink_link.state.value if self.uplink_link else "none"
        if not site_up:
            return False, "site broker not connected"
        return True, f"ok (uplink {uplink_state})"

    def status(self) -> dict[str, Any]:
        return {
            "site_id": self.config.site_id,
            "version": __version__,
            "config_hash": self.loaded.config_hash,
            "ready": self.ready()[0],
            "site_broker": self.site_link.state.value if self.site_link else "none",
            "uplink_broker": self.uplink_link.state.value if self.uplink_link else "none",
            "checkpoint": self.checkpointer.status() if self.checkpointer else {"enabled": False},
            **self.stats.snapshot(),
        }

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        async with AsyncExitStack() as stack:
            stack.enter_context(DataDirLock(cfg.data_dir))  # before anything connects
            site_broker = await self._embedded(stack, cfg.site_broker)
            uplink_broker = await self._embedded(
                stack, cfg.uplink.broker, reuse=(cfg.site_broker, site_broker)
            )
            self.uplink_link = MqttLink(
                uplink_broker,
                client_id=uplink_broker.client_id or f"edge-{cfg.site_id}-uplink",
                role="core",
                subscriptions=cfg.uplink.ack_subscriptions(cfg.site_id),
                qos=1,
                sink=self._from_core,
            )
            # the uplink first: the link may bring the core's acknowledgements at once
            self.uplink = await stack.enter_async_context(
                self._uplink_factory(self, self.uplink_link)
            )
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
                    )
                )
            topics = minimal_filters(
                [t for slot in self.slots for t in slot.pipeline.config.topics]
                + cfg.ingest.extra_subscriptions
            )
            checkpointer = self.checkpointer
            if checkpointer is not None:
                checkpointer.restore()
            if self._source is None:
                self.site_link = await stack.enter_async_context(
                    MqttLink(
                        site_broker,
                        client_id=site_broker.client_id or f"edge-{cfg.site_id}-ingest",
                        role="site",
                        subscriptions=topics,
                        qos=cfg.ingest.qos,
                        sink=self.queue.put,
                        max_payload_bytes=cfg.ingest.max_payload_bytes,
                        on_oversized=self._oversized,
                        manual_ack=self._manual_ack(site_broker),
                    )
                )
                if checkpointer is not None and self.site_link.manual_ack:
                    checkpointer.link = self.site_link
            log.info(
                "site %s running %d pipeline(s): %s",
                cfg.site_id,
                len(self.slots),
                ", ".join(s.name for s in self.slots),
            )
            async with asyncio.TaskGroup() as tg:
                streams = [
                    tg.create_task(
                        slot.pipeline.run(functools.partial(self._submit, slot.name)),
                        name=f"stream-{slot.name}",
                    )
                    for slot in self.slots
                    if slot.pipeline.input_kind == "stream"
                ]
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
                log.info("draining: stop reading, flush pipelines, hand summaries to the core")
                self.queue.close()  # what comes now stays unacknowledged, for the next start
                if self.site_link is not None and not self.site_link.manual_ack:
                    await self.site_link.close()
                await process
                await self._close_streams(streams)
                async with self._emit_lock:  # never between a tick's emission and its append
                    ticker.cancel()
                if checkpoints is not None:
                    await checkpoints  # it stops at _stop; a write under way finishes
                await self._stop_pipelines()
                if self.site_link is not None:
                    await self.site_link.close()
                left = await self.uplink.drain(cfg.uplink.drain_timeout_s)
                sender.cancel()
            log.info(
                "stopped: %d messages in, %d summaries out, %d unsent",
                self.stats.messages_in,
                sum(self.stats.summaries_out.values()),
                left,
            )

    async def _close_streams(self, streams: Sequence[asyncio.Task[None]]) -> None:
        for slot in self.slots:
            if slot.pipeline.input_kind == "stream":
                slot.pipeline.close()
        for stream in streams:
            await stream

    def _manual_ack(self, broker: BrokerConfig) -> bool:
        """Hold PUBACKs until a checkpoint covers the message: checkpoints on, a stateful
        pipeline, QoS 1, a client that can hold them, and a session that outlives us."""
        if self.checkpointer is None or not self.checkpointer.pipelines:
            return False
        if self.config.ingest.qos != 1:
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

    async def _stop_pipelines(self) -> None:
        """Clean stop: plugins with the state API are checkpointed (their open windows carry
        over to the next start); the others flush what they hold, as partial results."""
        checkpointer = self.checkpointer
        stateful = set() if checkpointer is None else set(checkpointer.pipelines)
        async with self._emit_lock:
            for slot in self.slots:
                if slot.pipeline not in stateful:
                    await self._submit(slot.name, slot.pipeline.flush())
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
        interval = self.config.checkpoint.interval_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                break
            try:
                await checkpointer.checkpoint(self._emit_lock)
            except OSError:
                # input stays unacknowledged (the broker keeps it); try again next interval
                log.exception("checkpoint %d could not be written", checkpointer.seq)

    async def _embedded(
        self,
        stack: AsyncExitStack,
        broker: BrokerConfig,
        reuse: tuple[BrokerConfig, BrokerConfig] | None = None,
    ) -> BrokerConfig:
        """Start an embedded broker if ``broker`` asks for one; return the config to dial."""
        if not broker.embedded:
            return broker
        if reuse is not None and reuse[0].embedded and reuse[0].port == broker.port:
            return reuse[1]  # site and uplink share one embedded broker
        data = self.config.data_dir / "broker"
        embedded = await stack.enter_async_context(EmbeddedBroker(broker.host, broker.port, data))
        return broker.model_copy(update={"port": embedded.port})

    # -- hot loop ----------------------------------------------------------------------------

    def _from_core(self, message: RawMessage) -> None:
        """What the uplink link receives (the core's acknowledgements) goes to the uplink."""
        if self.uplink is not None:
            self.uplink.receive(message)

    def _oversized(self, message: RawMessage) -> None:
        del message
        self.stats.messages_in += 1
        self.stats.ingest_dropped["oversized"] += 1

    def _route(self, topic: str) -> tuple[PipelineSlot, ...]:
        slots = tuple(s for s in self.slots if s.matcher.matches(topic))
        if len(self._routes) > 100_000:
            self._routes.clear()
        self._routes[topic] = slots
        return slots

    async def _process_loop(self) -> None:
        ingest = self.config.ingest
        wait = ingest.batch_wait_ms / 1000.0
        checkpointer = self.checkpointer
        lock = self._emit_lock
        while True:
            batch = await self.queue.get_batch(ingest.batch_max, wait)
            if not batch:
                break  # the queue was closed and is empty
            if checkpointer is None:
                await self._dispatch(batch)
                continue
            async with lock:
                await self._dispatch(checkpointer.admit(batch))
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
                await self._dispatch_settled(batch)
            await self._emit_all(operator.methodcaller("on_tick", at))
        log.info("replay source finished")
        self._stop.set()

    async def _dispatch_settled(self, batch: Sequence[RawMessage]) -> None:
        """Replay dispatch: stream stages settle before they see a topic a second time, so that
        a latest-message-wins stage drops nothing and results do not depend on speed."""
        streams = [s.pipeline for s in self.slots if s.pipeline.input_kind == "stream"]
        if not streams:
            await self._dispatch(batch)
            return
        part: list[RawMessage] = []
        seen: set[str] = set()
        for message in batch:
            if message.topic in seen:
                await self._dispatch(part)
                for stream in streams:
                    await stream.settle()
                part, seen = [], set()
            part.append(message)
            seen.add(message.topic)
        await self._dispatch(part)
        for stream in streams:
            await stream.settle()

    async def _dispatch(self, batch: Sequence[RawMessage]) -> None:
        if not batch:
            return
        stats = self.stats
        stats.messages_in += len(batch)
        stats.bytes_in += sum(map(len, map(_payload, batch)))
        stats.observe_batch(len(batch))
        if self.queue.dropped:
            stats.ingest_dropped["overflow"] = self.queue.dropped
        routes = self._routes
        shares: dict[PipelineSlot, list[RawMessage]] = {}
        unexpected = 0
        for msg in batch:
            slots = routes.get(msg.topic)
            if slots is None:
                slots = self._route(msg.topic)
            if not slots:
                unexpected += 1
            for slot in slots:
                share = shares.get(slot)
                if share is None:
                    shares[slot] = [msg]
                else:
                    share.append(msg)
        if unexpected:
            stats.ingest_dropped["unexpected_topic"] += unexpected
        for slot, messages in shares.items():
            await self._run_slot(slot, messages)

    async def _run_slot(self, slot: PipelineSlot, messages: list[RawMessage]) -> None:
        pipeline = slot.pipeline
        try:
            if pipeline.input_kind == "stream":
                for message in messages:
                    pipeline.offer(message)
                return
            if pipeline.input_kind == "messages":
                if pipeline.blocking:
                    out = await asyncio.to_thread(pipeline.process_messages, messages)
                else:
                    out = pipeline.process_messages(messages)
            else:
                errors: Counter[str] = Counter()
                batch = slot.decoder.decode(messages, errors)
                for reason, n in errors.items():
                    self.stats.decode_errors[(slot.name, reason)] += n
                self.stats.readings_in[slot.name] += len(batch)
                if not len(batch):
                    return
                if pipeline.blocking:
                    out = await asyncio.to_thread(pipeline.process, batch)
                else:
                    out = pipeline.process(batch)
        except Exception:
            # A plugin bug must not take the whole site down: the batch is counted as failed
            # with its traceback in the log, and the pipeline carries on with the next batch.
            self.stats.decode_errors[(slot.name, "plugin_error")] += len(messages)
            log.exception("pipeline %s failed on a batch of %d messages", slot.name, len(messages))
            return
        await self._submit(slot.name, out)

    async def _submit(self, name: str, summaries: Sequence[Summary]) -> None:
        if summaries:
            if self.checkpointer is not None:
                self.checkpointer.note_emitted()
            self.stats.summaries_out[name] += len(summaries)
            assert self.uplink is not None
            await self.uplink.submit(summaries, replayed=self._source is not None)

    async def _emit_all(self, call: Callable[[Pipeline[Any]], Sequence[Summary]]) -> None:
        for slot in self.slots:
            await self._submit(slot.name, call(slot.pipeline))

    async def _tick_loop(self) -> None:
        if self._source is not None:
            return  # a replay ticks on recorded time, from _source_loop
        interval = self.config.ops.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            async with self._emit_lock:
                now = self.clock.time()
                await self._emit_all(operator.methodcaller("on_tick", now))


def spool_config(runtime: SiteRuntime) -> SpoolConfig:
    """The site's spool config, with compaction held off for as long as a pipeline may still
    correct a window (see :meth:`Pipeline.correction_horizon_s`)."""
    config = runtime.config.spool
    horizons = [slot.pipeline.correction_horizon_s() for slot in runtime.slots]
    horizon = max((h for h in horizons if h is not None), default=0.0)
    compaction = config.compaction
    if not compaction.enabled or horizon <= compaction.min_age_s:
        return config
    log.info(
        "spool: compaction.min_age_s raised from %.0f s to %.0f s: a pipeline may still "
        "correct a window that long after its end",
        compaction.min_age_s,
        horizon,
    )
    return config.model_copy(
        update={"compaction": compaction.model_copy(update={"min_age_s": horizon})}
    )


def default_uplink(runtime: SiteRuntime, link: MqttLink) -> Uplink:
    """The spooled uplink (store and forward), or the in-memory one when it is switched off."""
    cfg = runtime.config
    site_id, config_hash, clock = cfg.site_id, runtime.loaded.config_hash, runtime.clock
    if not cfg.uplink.store_and_forward:
        seq = SeqAllocator(cfg.data_dir / "seq.state")
        return MemoryUplink(
            cfg.uplink,
            link,
            site_id=site_id,
            version=__version__,
            config_hash=config_hash,
            seq=seq,
            clock=clock,
        )
    up = cfg.uplink
    spool = Spool(spool_config(runtime), data_dir=cfg.data_dir, clock=runtime.clock)
    sender = Sender(
        spool,
        link,
        SenderConfig(
            topic=up.topic.format(site_id=cfg.site_id),
            encoding=up.encoding,
            max_batch_bytes=up.max_batch_bytes,
            max_batch_records=up.max_batch,
            max_in_flight=up.max_in_flight,
            live_window_s=up.live_window_s,
            backlog_rate_per_s=up.backlog_rate_per_s,
            publish_timeout_s=up.publish_timeout_s,
            delivery=up.delivery,
            ack_timeout_s=up.ack_timeout_s,
            max_unacked=up.max_unacked,
        ),
        clock=runtime.clock,
        link_generation=lambda: link.connects,
    )
    acks = up.ack_subscriptions(site_id)
    return SpooledUplink(
        spool,
        sender,
        link=link,
        site_id=site_id,
        version=__version__,
        config_hash=config_hash,
        clock=clock,
        ack_topic=acks[0] if acks else None,
    )
