"""The core's acknowledgements: which of a site's sequence numbers the core has stored.

The core publishes one to ``edge/{site_id}/acks`` (QoS 1) after each durable commit; the site
deletes a spooled record only when an acknowledgement names its sequence number. The payload
is a msgpack map::

    {"v": 1, "site": "<site_id>", "seqs": [lo1, hi1, lo2, hi2, ...]}

``seqs`` holds inclusive ranges, ascending and disjoint, flattened into one list: a commit of
a contiguous run of summaries costs two integers whatever its size. A duplicate the core
already had is acknowledged again (it is stored), so a resend always ends in an ack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from edge_runtime.errors import DecodeError

__all__ = ["ACK_VERSION", "CoreAck", "decode_ack", "encode_ack", "seq_ranges"]

ACK_VERSION = 1


@dataclass(frozen=True, slots=True)
class CoreAck:
    """One acknowledgement: ``ranges`` are inclusive ``(lo, hi)`` pairs, ascending."""

    site: str
    ranges: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering ``seqs`` (duplicates allowed)."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def encode_ack(site: str, ranges: Sequence[tuple[int, int]]) -> bytes:
    flat = [n for pair in ranges for n in pair]
    packed: bytes = msgpack.packb({"v": ACK_VERSION, "site": site, "seqs": flat})
    return packed


def decode_ack(payload: bytes) -> CoreAck:
    """Raises :class:`DecodeError` (``malformed_ack``) for anything but a well-formed ack."""
    try:
        doc: Any = msgpack.unpackb(payload, raw=False)
        if not isinstance(doc, dict) or doc.get("v") != ACK_VERSION:
            raise ValueError(f"not an ack document of version {ACK_VERSION}")
        site = doc["site"]
        flat = doc["seqs"]
        if not isinstance(site, str) or not isinstance(flat, list) or len(flat) % 2:
            raise ValueError("site must be a string and seqs a list of (lo, hi) pairs")
        ranges = []
        for lo, hi in zip(flat[::2], flat[1::2], strict=True):
            if type(lo) is not int or type(hi) is not int or not 0 <= lo <= hi:
                raise ValueError(f"bad range {lo!r}..{hi!r}")
            ranges.append((lo, hi))
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_ack", str(exc)) from exc
    return CoreAck(site, tuple(ranges))
