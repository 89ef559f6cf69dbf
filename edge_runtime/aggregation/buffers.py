"""The window store's buffers: the readings of one hop of event time (:class:`SlotBuffer`) and
the key set and revisions of one window index (:class:`WindowBook`).

Both are plain numpy bookkeeping with no notion of time; :mod:`~edge_runtime.aggregation.windows`
decides which slot a reading goes to and when a window closes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "KeyArray", "SlotArray", "SlotBuffer", "WindowBook"]

KeyArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
SlotArray = npt.NDArray[np.int64]


class SlotBuffer:
    """Readings of one hop of event time, all keys, as appended chunks.

    With ``by_value`` (percentiles wanted) compacting sorts the readings by value, so that a
    window over several slots is a concatenation of sorted runs, cheap to sort again.
    """

    __slots__ = ("by_value", "keys", "size", "sorted", "values")

    def __init__(self, *, by_value: bool) -> None:
        self.keys: list[KeyArray] = []
        self.values: list[FloatArray] = []
        self.size = 0
        self.by_value = by_value
        self.sorted = False  # whether chunk 0 is sorted by value

    def append(self, keys: KeyArray, values: FloatArray) -> None:
        self.keys.append(keys)
        self.values.append(values)
        self.size += int(keys.shape[0])

    def arrays(self) -> tuple[KeyArray, FloatArray]:
        """All readings as one chunk (compacted in place, so the next window reuses it)."""
        if len(self.keys) == 1 and (self.sorted or not self.by_value):
            return self.keys[0], self.values[0]
        keys = np.concatenate(self.keys)
        values = np.concatenate(self.values)
        if self.by_value:
            # a sorted chunk plus a few late readings: a run-adaptive sort is the fast one
            order = np.argsort(values, kind="stable" if self.sorted else None)
            keys, values = keys[order], values[order]
            self.sorted = True
        self.keys, self.values = [keys], [values]
        return keys, values


class WindowBook:
    """Bookkeeping of one window index: which keys it holds and their correction revisions."""

    __slots__ = ("floor", "nkeys", "present", "revisions")

    def __init__(self, capacity: int) -> None:
        self.present = np.zeros(max(capacity, 16), dtype=bool)
        self.nkeys = 0
        self.revisions: dict[int, int] = {}
        self.floor = 0  # lowest revision of its next results (raised after a lossy crash)

    def grow(self, capacity: int) -> None:
        if self.present.shape[0] < capacity:
            grown = np.zeros(max(capacity, 2 * self.present.shape[0]), dtype=bool)
            grown[: self.present.shape[0]] = self.present
            self.present = grown

    def mark(self, keys: KeyArray, capacity: int) -> int:
        """Record that ``keys`` have readings here; return how many were new."""
        self.grow(capacity)
        new = ~self.present[keys]
        if not new.any():
            return 0
        fresh = np.unique(keys[new])
        self.present[fresh] = True
        self.nkeys += int(fresh.shape[0])
        return int(fresh.shape[0])
