"""The hot path of a site: a micro-batch of messages, routed by topic to the pipelines, each
pipeline's share through its slot's guard, and the summaries they return to the uplink.

:class:`Dispatcher` holds the running pipelines (their slots, which a reload swaps between
batches with :meth:`Dispatcher.set_slots`) and the topic → pipelines routes. The runtime calls
it under its emit lock: :meth:`Dispatcher.dispatch` for live batches,
:meth:`Dispatcher.dispatch_settled` for a replayed recording, :meth:`Dispatcher.emit_all` for
ticks. Summaries the uplink refuses are counted by pipeline and reason and the site goes on.
"""

from __future__ import annotations

import functools
import logging
import operator
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from edge_runtime.errors import UplinkRefusedError
from edge_runtime.ops.stats import RuntimeStats
from edge_runtime.pipelines.api import Pipeline
from edge_runtime.runtime.checkpointing import Checkpointer
from edge_runtime.runtime.slots import PipelineSlot
from edge_runtime.sources.queue import IngestQueue
from edge_runtime.types import RawMessage, Summary
from edge_runtime.uplink.base import Uplink

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

_payload = operator.attrgetter("payload")
_REFUSAL_LOG_S = 10.0  # a streak of refusals is logged once per this many seconds
_MAX_ROUTES = 100_000  # topics remembered before the route cache starts over


class Dispatcher:
    """See the module docstring. ``checkpointer`` is told of every emission; ``replayed``
    marks every summary as coming from a recording. The runtime sets :attr:`uplink` before the
    first batch."""

    def __init__(
        self,
        slots: Sequence[PipelineSlot],
        stats: RuntimeStats,
        queue: IngestQueue,
        *,
        checkpointer: Checkpointer | None,
        replayed: bool,
    ) -> None:
        self.slots = list(slots)
        self.uplink: Uplink | None = None
        self._stats = stats
        self._queue = queue
        self._checkpointer = checkpointer
        self._replayed = replayed
        self._routes: dict[str, tuple[PipelineSlot, ...]] = {}
        self._refusal_logged: dict[str, float] = {}

    def set_slots(self, slots: Sequence[PipelineSlot]) -> None:
        """Run ``slots`` from the next batch on (a reload, between batches)."""
        self.slots = list(slots)
        self._routes.clear()

    def _route(self, topic: str) -> tuple[PipelineSlot, ...]:
        slots = tuple(s for s in self.slots if s.matcher.matches(topic))
        if len(self._routes) > _MAX_ROUTES:
            self._routes.clear()
        self._routes[topic] = slots
        return slots

    async def dispatch_settled(self, batch: Sequence[RawMessage]) -> None:
        """Replay dispatch: stream stages settle before they see a topic a second time, so that
        a latest-message-wins stage drops nothing and results do not depend on speed."""
        streams = [s for s in self.slots if s.pipeline.input_kind == "stream"]
        if not streams:
            await self.dispatch(batch)
            return
        part: list[RawMessage] = []
        seen: set[str] = set()
        for message in batch:
            if message.topic in seen:
                await self.dispatch(part)
                await self._settle(streams)
                part, seen = [], set()
            part.append(message)
            seen.add(message.topic)
        await self.dispatch(part)
        await self._settle(streams)

    @staticmethod
    async def _settle(streams: list[PipelineSlot]) -> None:
        for slot in streams:
            if slot.isolated is None:  # an isolated stage may never settle
                try:
                    await slot.pipeline.settle()
                except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the site
                    slot.failed("settle", exc)

    async def dispatch(self, batch: Sequence[RawMessage]) -> None:
        """Route ``batch`` by topic and run each pipeline's share (counted as it comes in)."""
        if not batch:
            return
        stats = self._stats
        stats.messages_in += len(batch)
        stats.bytes_in += sum(map(len, map(_payload, batch)))
        stats.observe_batch(len(batch))
        if self._queue.dropped:
            stats.ingest_dropped["overflow"] = self._queue.dropped
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
        """One pipeline's share of a batch, through the slot's guard: a batch the plugin
        fails on is counted (``plugin_error``) and set aside, as is every batch of an isolated
        pipeline (``pipeline_isolated``)."""
        pipeline = slot.pipeline
        if slot.isolated is not None:
            self._stats.decode_errors[(slot.name, "pipeline_isolated")] += len(messages)
            return
        out: Sequence[Summary] | None
        if pipeline.input_kind == "stream":
            if await slot.call("offer", functools.partial(slot.offer_all, messages)) is None:
                return
            slot.processed += len(messages)
            return
        if pipeline.input_kind == "messages":
            out = await slot.call(
                "process_messages",
                functools.partial(pipeline.process_messages, messages),
                blocking=pipeline.blocking,
            )
        else:
            errors: Counter[str] = Counter()
            try:
                batch = slot.decoder.decode(messages, errors)
            except Exception:  # a decoder bug: bad input is counted by the decoder itself
                log.exception("decoding a batch for pipeline %s failed", slot.name)
                errors["decoder_error"] += len(messages)
                batch = None
            for reason, n in errors.items():
                self._stats.decode_errors[(slot.name, reason)] += n
            if batch is None:
                return
            self._stats.readings_in[slot.name] += len(batch)
            if not len(batch):
                return
            out = await slot.call(
                "process", functools.partial(pipeline.process, batch), blocking=pipeline.blocking
            )
        if out is None:
            self._stats.decode_errors[(slot.name, "plugin_error")] += len(messages)
            return
        slot.processed += len(messages)
        await self.submit(slot.name, out)

    async def submit(self, name: str, summaries: Sequence[Summary]) -> None:
        """Hand pipeline ``name``'s summaries to the uplink; a refusal (a full disk, a full or
        failed spool) is counted by pipeline and reason, logged once per streak, and the site
        goes on."""
        if not summaries:
            return
        if self._checkpointer is not None:
            self._checkpointer.note_emitted()
        self._stats.summaries_out[name] += len(summaries)
        assert self.uplink is not None
        try:
            await self.uplink.submit(summaries, replayed=self._replayed)
        except UplinkRefusedError as exc:
            refused = self._stats.summaries_refused
            refused[(name, exc.reason)] += len(summaries)
            now = time.monotonic()
            if now - self._refusal_logged.get(exc.reason, -_REFUSAL_LOG_S) >= _REFUSAL_LOG_S:
                self._refusal_logged[exc.reason] = now
                total = sum(n for (_, reason), n in refused.items() if reason == exc.reason)
                log.error("summaries refused (%d so far, %s): %s", total, exc.reason, exc)

    async def emit_all(self, call: str, fn: Callable[[Pipeline[Any]], Sequence[Summary]]) -> None:
        """``on_tick`` or ``flush`` of every pipeline, each through its slot's guard."""
        for slot in self.slots:
            out = await slot.call(call, functools.partial(fn, slot.pipeline))
            if out:
                await self.submit(slot.name, out)
