"""An example pipeline plugin: alert once when a key's readings cross a limit.

This is the plugin walked through in ``docs/plugin-authoring.md``; copy it to start your own.
It shows the four things every plugin has:

1. a config model derived from :class:`~edge_runtime.PipelineConfig` whose ``type`` is a
   ``Literal`` of the plugin's name, with a description on every field;
2. a :class:`~edge_runtime.Pipeline` subclass naming ``type_name`` and ``config_model``;
3. ``process(batch)``, which works on the whole batch with numpy (no loop over readings) and
   returns the summaries it completes;
4. counters through ``self.context.count``.

Behaviour: with ``direction = "above"``, a key raises an alert at the first reading above
``limit``; it stays quiet for the rest of that excursion and is re-armed only once a reading
falls below ``limit - hysteresis``, so a value hovering around the limit alerts once, not on
every wobble. ``direction = "below"`` mirrors this. Missing values (NaN) change nothing. Within a
batch readings are taken in event-time order per key; batches are taken in arrival order.

Site config::

    [[pipelines]]
    type = "threshold"
    name = "river-level-alert"
    topics = ["city/river/+/level"]
    limit = 3.5
    hysteresis = 0.2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_runtime.pipelines import Pipeline, PipelineConfig, PipelineContext, ReadingBatch, Summary

__all__ = ["ThresholdConfig", "ThresholdPipeline"]

_ARMED, _TRIPPED, _NO_CHANGE = 0, 1, -1


class ThresholdConfig(PipelineConfig):
    """A ``[[pipelines]]`` table with ``type = "threshold"``."""

    type: Literal["threshold"] = Field(
        default="threshold", description="Selects this plugin: one alert per limit excursion."
    )
    limit: float = Field(description="The value whose crossing raises an alert.")
    direction: Literal["above", "below"] = Field(
        default="above",
        description="'above': alert when a reading exceeds the limit; 'below': when it drops "
        "under it.",
    )
    hysteresis: float = Field(
        default=0.0,
        ge=0,
        description="How far back past the limit a reading must go before the key can alert "
        "again (in the reading's unit). 0: any reading on the safe side of the limit re-arms.",
    )


class ThresholdPipeline(Pipeline[ThresholdConfig]):
    """Emits a ``kind="alert"`` summary when a key's reading crosses the limit."""

    type_name: ClassVar[str] = "threshold"
    config_model: ClassVar[type[PipelineConfig]] = ThresholdConfig

    def __init__(self, config: ThresholdConfig, context: PipelineContext) -> None:
        super().__init__(config, context)
        # Per key code: _ARMED or _TRIPPED (in an excursion, already alerted). Codes index it.
        self._state = np.zeros(0, dtype=np.int8)

    def process(self, batch: ReadingBatch) -> Sequence[Summary]:
        cfg = self.config
        # Fold "below" into "above" by flipping signs, so one code path serves both.
        sign = 1.0 if cfg.direction == "above" else -1.0
        level = sign * batch.values
        crossed = level > sign * cfg.limit
        cleared = level < sign * cfg.limit - cfg.hysteresis  # NaN is neither
        self._grow(len(batch.key_table.names))
        if not crossed.any() and not self._state.any():
            return []  # fast path: nothing over the limit and nobody waiting to re-arm

        # Event-time order within each key; then each reading's event: tripped, armed or none.
        order = np.lexsort((batch.times, batch.keys))
        keys = batch.keys[order]
        event = np.where(crossed[order], _TRIPPED, np.where(cleared[order], _ARMED, _NO_CHANGE))

        # The state a reading sees is set by the last event before it in the same key, or, when
        # there is none, by the state carried over from earlier batches.
        n = keys.shape[0]
        index = np.arange(n)
        group_start = _group_starts(keys)
        last_event = np.maximum.accumulate(np.where(event != _NO_CHANGE, index, -1))
        before = np.concatenate(([-1], last_event[:-1]))
        in_key = before >= group_start
        seen = np.where(in_key, event[np.maximum(before, 0)], self._state[keys])
        alert = (event == _TRIPPED) & (seen == _ARMED)

        # Carry each key's final state into the next batch.
        group_end = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))
        decided = last_event[group_end] >= group_start[group_end]
        ends = group_end[decided]
        self._state[keys[ends]] = event[last_event[ends]]

        hits = order[alert]
        self.context.count("alerts", int(hits.shape[0]))
        names = batch.key_table.names
        alerts = [
            Summary(
                pipeline=self.name,
                key=names[code],
                window_start=t,
                window_end=t,
                stats={"value": value, "limit": cfg.limit},
                kind="alert",
                attrs={"direction": cfg.direction},
            )
            for code, t, value in zip(
                batch.keys[hits].tolist(),
                batch.times[hits].tolist(),
                batch.values[hits].tolist(),
                strict=True,
            )
        ]
        alerts.sort(key=lambda s: (s.window_end, s.key))
        return alerts

    def _grow(self, capacity: int) -> None:
        if self._state.shape[0] < capacity:
            grown = np.zeros(max(capacity, 2 * self._state.shape[0]), dtype=np.int8)
            grown[: self._state.shape[0]] = self._state
            self._state = grown


def _group_starts(keys: npt.NDArray[np.int32]) -> npt.NDArray[np.intp]:
    """For each position of a key-sorted array, the index where its key's run starts."""
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return np.repeat(starts, np.diff(np.append(starts, keys.shape[0])))
