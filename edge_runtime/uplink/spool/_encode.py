"""Rows for the ``records`` table, built in the writer thread as appends arrive.

Every payload is ``msgpack`` packing the document of
:func:`edge_runtime.uplink.spool.records.encode_payload` (same entries, same order, ``backlog``
last). :class:`SiteWrap` is the usual ``wrap`` of :meth:`SyncSpool.append_summaries`: for it
the document is built straight from each summary, without the intermediate
:class:`~edge_runtime.types.Envelope`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from edge_runtime.types import (
    ENVELOPE_SCHEMA,
    Envelope,
    Summary,
    envelope_id,
    replay_namespace,
)
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, finite_stats

__all__ = ["Encoded", "Row", "SiteWrap", "encode_rows"]

Row = tuple[int, str, str, float, float, float, int, bytes]
"""id, stream, envelope_id, window_start, window_end, created_at, crc, payload"""


@dataclass(frozen=True, slots=True)
class SiteWrap:
    """``wrap(summary, seq)``: :meth:`Envelope.wrap` with the site's fields bound.

    Pass it to :meth:`SyncSpool.append_summaries` (or the asyncio facade): the spool then
    builds each stored document from the summary directly. The stored envelope is the one this
    object returns when called.
    """

    site: str
    created_at: float
    version: str
    config_hash: str
    replayed: bool = False
    site_revision: str = ""

    @property
    def namespace(self) -> str:
        return replay_namespace(self.config_hash) if self.replayed else ""

    def __call__(self, summary: Summary, seq: int) -> Envelope:
        return Envelope.wrap(
            summary,
            site=self.site,
            seq=seq,
            created_at=self.created_at,
            version=self.version,
            config_hash=self.config_hash,
            replayed=self.replayed,
            site_revision=self.site_revision,
        )


@dataclass(slots=True)
class Encoded:
    """The rows of one append, numbered from ``first_seq`` up to (not including) ``end_seq``."""

    rows: list[Row]
    first_seq: int
    end_seq: int
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])  # rows per priority class
    nbytes: int = 0  # payload bytes


def _class_of(kind: str, backlog: bool, attrs: Any, fixed: int | None) -> int:
    """:func:`records.priority_for` for the fields of one item (or the caller's fixed class)."""
    if fixed is not None:
        return fixed
    if kind == "alert":
        return 0
    if backlog or "compacted_from" in attrs:
        return 2
    return 1


def encode_rows(
    items: Sequence[Any],
    wrap: Callable[[Any, int], Envelope] | None,
    fixed: int | None,
    seq: int,
) -> Encoded:
    """The rows of ``items`` with sequence numbers from ``seq`` on.

    ``items`` are envelopes, or summaries when ``wrap`` is given (called in order with each
    final sequence number, unless it is a :class:`SiteWrap`). ``fixed`` is the priority class
    of all of them (None: by :func:`records.priority_for`). Raises (TypeError, ValueError,
    OverflowError, or what ``wrap`` raises) when an item cannot be encoded: the caller refuses
    the whole append.
    """
    if wrap is not None and type(wrap) is not SiteWrap:  # a subclass may call otherwise
        items = [wrap(item, seq + i) for i, item in enumerate(items)]
        wrap = None
    out = Encoded([], seq, seq)
    rows, counts = out.rows, out.counts
    pack = msgpack.Packer(use_bin_type=True).pack
    crc32 = zlib.crc32
    nbytes = 0
    for item in items:
        if wrap is None:
            site, created_at, version = item.site, item.created_at, item.version
            config_hash, replayed, backlog, eid = (
                item.config_hash,
                item.replayed,
                item.backlog,
                item.id,
            )
            site_revision = item.site_revision
        else:
            site, created_at, version = wrap.site, wrap.created_at, wrap.version
            config_hash, replayed, backlog = wrap.config_hash, wrap.replayed, False
            site_revision = wrap.site_revision
            eid = envelope_id(site, item, namespace=wrap.namespace)
        attrs = item.attrs
        doc = {
            "schema": ENVELOPE_SCHEMA,
            "id": eid,
            "site": site,
            "seq": seq,
            "pipeline": item.pipeline,
            "key": item.key,
            "window_start": item.window_start,
            "window_end": item.window_end,
            "stats": finite_stats(item.stats),
            "kind": item.kind,
            "revision": item.revision,
            "created_at": created_at,
            "version": version,
            "config_hash": config_hash,
            "replayed": replayed,
            "attrs": attrs if attrs.__class__ is dict else dict(attrs),
        }
        if site_revision:  # left out while empty, as in Envelope.to_dict
            doc["site_revision"] = site_revision
        doc["backlog"] = backlog  # last: flag_backlog rewrites the final byte
        payload: bytes = pack(doc)
        cls = _class_of(item.kind, backlog, attrs, fixed)
        rows.append(
            (
                (cls << PRIORITY_SHIFT) | seq,
                f"{item.pipeline}/{item.key}",
                eid,
                item.window_start,
                item.window_end,
                created_at,
                crc32(payload),
                payload,
            )
        )
        counts[cls] += 1
        nbytes += len(payload)
        seq += 1
    out.end_seq, out.nbytes = seq, nbytes
    return out
