"""The saved form of a window store (checkpoints): its slots, windows, watermark and key names
as one ``.npz`` blob of a few arrays, whatever the number of readings.

:func:`encode_state` writes a :class:`WindowState`; :func:`decode_state` reads one back with
its key codes remapped to the running key table. What a restored state means for the store
(a changed window geometry, changed statistics) is decided by
:meth:`~edge_runtime.aggregation.windows.WindowStore.restore`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.aggregation.buffers import FloatArray, KeyArray, SlotBuffer, WindowBook

__all__ = ["STATE_VERSION", "WindowState", "decode_state", "encode_state"]

STATE_VERSION = 1


@dataclass(slots=True)
class WindowState:
    """What a window store carries across a restart."""

    geometry: list[Any]
    """``[kind, size_s, hop, offset_s]`` of the spec the windows were cut by."""
    stats: list[str]
    frontier: int
    """Every window index below it is closed."""
    evicted: int
    """Data of windows and slots up to it is gone."""
    max_event: float
    watermark: float
    incomplete_before: float | None
    names: list[str]
    """Key names, indexed by the key codes of ``slots`` and ``windows``."""
    slots: dict[int, SlotBuffer]
    windows: dict[int, WindowBook]

    def open_pairs(self) -> int:
        """Open (key, window) pairs: those of the windows at or above the frontier."""
        return sum(w.nkeys for k, w in self.windows.items() if k >= self.frontier)

    def readings(self) -> int:
        return sum(slot.size for slot in self.slots.values())


def encode_state(state: WindowState) -> bytes:
    """``state`` as one ``.npz`` blob (slots concatenated, window key sets as one boolean
    matrix). Compacts each slot in place, as closing a window does."""
    names = state.names
    slot_ids = sorted(state.slots)
    parts = [state.slots[j].arrays() for j in slot_ids]
    win_ids = sorted(state.windows)
    width = len(names)
    present = np.zeros((len(win_ids), width), dtype=bool)
    rev_win: list[int] = []
    rev_code: list[int] = []
    rev_value: list[int] = []
    floors = np.array([state.windows[k].floor for k in win_ids], dtype=np.int64)
    for row, k in enumerate(win_ids):
        window = state.windows[k]
        n = min(width, window.present.shape[0])
        present[row, :n] = window.present[:n]
        for code, revision in window.revisions.items():
            rev_win.append(k)
            rev_code.append(code)
            rev_value.append(revision)
    meta = {
        "version": STATE_VERSION,
        "geometry": state.geometry,
        "stats": state.stats,
        "frontier": state.frontier,
        "evicted": state.evicted,
        "max_event": state.max_event,
        "watermark": state.watermark,
        "incomplete_before": state.incomplete_before,
    }
    arrays: dict[str, Any] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "names": np.frombuffer("\x1f".join(names).encode(), dtype=np.uint8),
        "slot_ids": np.array(slot_ids, dtype=np.int64),
        "slot_len": np.array([p[0].shape[0] for p in parts], dtype=np.int64),
        "slot_keys": np.concatenate([p[0] for p in parts]) if parts else _no_keys(),
        "slot_values": np.concatenate([p[1] for p in parts]) if parts else _no_values(),
        "win_ids": np.array(win_ids, dtype=np.int64),
        "win_present": present,
        "win_floor": floors,
        "rev_win": np.array(rev_win, dtype=np.int64),
        "rev_code": np.array(rev_code, dtype=np.int32),
        "rev_value": np.array(rev_value, dtype=np.int64),
    }
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode_state(
    data: bytes, key_table: dict[str, int], names: list[str], *, by_value: bool
) -> WindowState:
    """Read an :func:`encode_state` blob. Its key names are interned into ``key_table``
    (whose ``names`` list is ``names``) and its codes remapped to it; the slots are sorted by
    value when compacted if ``by_value``. Raises :class:`ValueError` for a blob that is not
    one, or of another version."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays["meta"].tobytes())
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"unreadable window state: {exc}") from exc
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"window state version {meta.get('version')!r} is not supported")
    raw_names = arrays["names"].tobytes().decode()
    old_names = raw_names.split("\x1f") if raw_names else []
    remap = np.array([key_table[n] for n in old_names], dtype=np.int32)
    width = len(names)
    slots: dict[int, SlotBuffer] = {}
    lengths = arrays["slot_len"].tolist()
    keys = remap[arrays["slot_keys"]] if remap.size else arrays["slot_keys"]
    values = arrays["slot_values"]
    at = 0
    for j, n in zip(arrays["slot_ids"].tolist(), lengths, strict=True):
        slot = slots[j] = SlotBuffer(by_value=by_value)
        slot.append(keys[at : at + n].astype(np.int32), values[at : at + n])
        at += n
    windows: dict[int, WindowBook] = {}
    present = arrays["win_present"]
    win_ids = arrays["win_ids"].tolist()
    floors = arrays["win_floor"].tolist() if "win_floor" in arrays else [0] * len(win_ids)
    for row, k in enumerate(win_ids):
        window = windows[k] = WindowBook(width)
        window.floor = int(floors[row])
        codes = remap[np.flatnonzero(present[row])]
        window.present[codes] = True
        window.nkeys = int(codes.shape[0])
    for k, code, revision in zip(
        arrays["rev_win"].tolist(),
        arrays["rev_code"].tolist(),
        arrays["rev_value"].tolist(),
        strict=True,
    ):
        windows[k].revisions[int(remap[code])] = revision
    return WindowState(
        geometry=meta["geometry"],
        stats=meta["stats"],
        frontier=int(meta["frontier"]),
        evicted=int(meta["evicted"]),
        max_event=float(meta["max_event"]),
        watermark=float(meta["watermark"]),
        incomplete_before=meta["incomplete_before"],
        names=names,
        slots=slots,
        windows=windows,
    )


def _no_keys() -> KeyArray:
    return np.empty(0, dtype=np.int32)


def _no_values() -> FloatArray:
    return np.empty(0, dtype=np.float64)
