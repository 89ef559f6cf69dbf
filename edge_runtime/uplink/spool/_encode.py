"""Rows for the ``records`` table, built fast: the writer's hot path.

:func:`edge_runtime.uplink.spool.records.encode_payload` is the reference encoding of a stored
envelope (msgpack of :meth:`Envelope.to_dict`, ``backlog`` last). :class:`RowEncoder` writes
payloads that decode to the same document (byte for byte what msgpack writes for it, in the
order below), about twice as fast, by packing only what varies:

* what is the same for many envelopes (the map header, ``schema``, ``site``, ``version``,
  ``config_hash``, ``kind``, ``revision``, ``replayed``) is one cached prefix;
* ``pipeline`` and ``key`` (and the row's stream name) are cached per stream;
* the sequence number, the three timestamps and the id are one :mod:`struct` call, the stats
  one msgpack call; empty attrs and the backlog flag are constants.

An envelope the fast path does not take as it is (an int timestamp, a value :mod:`struct`
refuses) goes through the reference encoder. :class:`SiteWrap` is the usual ``wrap`` of
:meth:`SpoolCore.append_summaries`; the encoder recognises it and encodes each summary
directly, without building the intermediate :class:`Envelope`.

The same loop also exists in C (``_rows.c``, built by ``pip install`` where a compiler is
present; ``COMPILED`` says whether it is). It writes the same bytes about three times faster
for the common case and hands every other item to the Python loop here, which stays the
reference for it (tests compare the two row for row).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import msgpack

from edge_runtime.types import ENVELOPE_SCHEMA, Envelope, Summary, envelope_id
from edge_runtime.uplink.spool.records import (
    PRIORITY_SHIFT,
    Priority,
    _finite_stats,
    encode_payload,
)

_compiled: ModuleType | None = None  # the compiled row loop is gone; the Python loop is used

__all__ = ["COMPILED", "RowEncoder", "SiteWrap"]

COMPILED = _compiled is not None
"""Whether the compiled row loop is in use (else the Python loop below, same bytes)."""


@dataclass(frozen=True, slots=True)
class SiteWrap:
    """``wrap(summary, seq)``: :meth:`Envelope.wrap` with the site's fields bound.

    Pass it to :meth:`SpoolCore.append_summaries` (or the asyncio facade): the spool then
    encodes each summary straight into its stored form, which is much faster than calling an
    arbitrary wrap function and encoding the envelope it returns. The stored envelope is the
    one this object returns when called.
    """

    site: str
    created_at: float
    version: str
    config_hash: str
    replayed: bool = False

    def __call__(self, summary: Summary, seq: int) -> Envelope:
        return Envelope.wrap(
            summary,
            site=self.site,
            seq=seq,
            created_at=self.created_at,
            version=self.version,
            config_hash=self.config_hash,
            replayed=self.replayed,
        )


def _key(name: str) -> bytes:
    packed: bytes = msgpack.packb(name)
    return packed


# A payload is one msgpack map of 17 entries, in this order:
#   prefix: map header, schema, site, version, config_hash, kind, revision, replayed, "seq" key
#   head: the seq value; window_start, window_end, created_at (float64); id
#   stream block: pipeline, key, "stats" key; then the stats map
#   tail: attrs; backlog (last: see records.flag_backlog)
# The head is one struct call when seq is a uint16 or uint32 (as msgpack writes those) and the
# id 32 bytes long (an envelope_id): that is every record but the first 255 of a spool.
_MAP17 = b"\xde\x00\x11"
_K_WINDOW_START = _key("window_start") + b"\xcb"  # the key, then the float64 marker
_K_WINDOW_END = _key("window_end") + b"\xcb"
_K_CREATED_AT = _key("created_at") + b"\xcb"
_K_ID = _key("id")
_K_ID32 = _K_ID + b"\xd9\x20"  # str 8 header of a 32-byte string
_TIMES = f">{len(_K_WINDOW_START)}sd{len(_K_WINDOW_END)}sd{len(_K_CREATED_AT)}sd"
_HEAD32 = struct.Struct(">BI" + _TIMES[1:] + "5s32s").pack  # 0xce, seq, times, id
_HEAD16 = struct.Struct(">BH" + _TIMES[1:] + "5s32s").pack  # 0xcd, seq, times, id
_TIMES_PACK = struct.Struct(_TIMES).pack
_K_ATTRS = _key("attrs")
_BACKLOG = (_key("backlog") + b"\xc2", _key("backlog") + b"\xc3")
_TAIL_PLAIN = (_K_ATTRS + b"\x80" + _BACKLOG[0], _K_ATTRS + b"\x80" + _BACKLOG[1])  # no attrs
_CACHE_LIMIT = 1 << 16
_UNSET: Any = object()
# Payloads are built as bytearrays: Python 3.11's sqlite3 binds a bytearray about five times
# faster than bytes (it looks bytes up in its adapter registry first), and binding is the
# largest part of the writer's per-row cost once the payload is built.
_JOIN = bytearray().join

# the loop inlines records.priority_for with these class numbers
assert (Priority.ALERT, Priority.LIVE, Priority.BACKLOG) == (0, 1, 2)


_CONSTS = (_K_WINDOW_START, _K_WINDOW_END, _K_CREATED_AT, _K_ID32, *_TAIL_PLAIN)


class RowEncoder:
    """Builds the rows of appended envelopes (see the module doc). One per thread.

    ``compiled=False`` uses the Python loop even where the compiled one is built (tests
    compare the two)."""

    def __init__(self, *, compiled: bool = True) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._prefixes: dict[tuple[Any, ...], bytes] = {}
        self._streams: dict[str, dict[str, tuple[bytes, str]]] = {}
        self._compiled = _compiled if compiled else None

    def encode_rows(
        self,
        items: Sequence[Any],
        wrap: Callable[[Any, int], Envelope] | None,
        fixed: int | None,
        seq: int,
        out: tuple[list[object], list[int]],
    ) -> tuple[int, int]:
        """Append the rows of ``items`` to ``out[0]`` with sequence numbers from ``seq`` on.

        ``items`` are envelopes, or summaries when ``wrap`` is given (called in order with
        each final sequence number, unless it is a :class:`SiteWrap`). ``fixed`` is the
        priority class of all of them (None: by :func:`priority_for`). Counts the rows per
        class into ``out[1]``; returns the next sequence number and the payload bytes. An
        envelope that cannot be encoded raises (the caller refuses the whole append).
        """
        if wrap is None or type(wrap) is SiteWrap:  # not a subclass: it may call otherwise
            return self._rows_any(items, wrap, fixed, seq, out)
        wrapped = [wrap(item, seq + i) for i, item in enumerate(items)]
        return self._rows_any(wrapped, None, fixed, seq, out)

    def _rows_any(
        self,
        items: Sequence[Any],
        site_wrap: SiteWrap | None,
        fixed: int | None,
        seq: int,
        out: tuple[list[object], list[int]],
    ) -> tuple[int, int]:
        """The compiled loop where it is built, else :meth:`_rows`. The compiled loop takes
        the common case itself and hands any other item to :meth:`_rows`, one at a time."""
        if self._compiled is None:
            return self._rows(items, site_wrap, fixed, seq, out)

        def slow(item: Any, at: int) -> int:
            return self._rows((item,), site_wrap, fixed, at, out)[1]

        wrap_fields = (
            None
            if site_wrap is None
            else (
                site_wrap.site,
                site_wrap.version,
                site_wrap.config_hash,
                site_wrap.created_at,
                site_wrap.replayed,
            )
        )
        end, nbytes = self._compiled.encode(
            items,
            wrap_fields,
            -1 if fixed is None else fixed,
            seq,
            out[0],
            out[1],
            _CONSTS,
            self._prefixes,
            self._prefix,
            self._streams,
            self._stream_of,
            envelope_id,
            slow,
        )
        return int(end), int(nbytes)

    def _stream_of(self, pipeline: str, key: str) -> tuple[bytes, str]:
        return self._stream(self._keys_of(pipeline), pipeline, key)

    def _prefix(self, key: tuple[Any, ...]) -> bytes:
        site, version, config_hash, kind, revision, replayed = key
        pack = self._packer.pack
        prefix = b"".join(
            (
                _MAP17,
                pack("schema"),
                pack(ENVELOPE_SCHEMA),
                pack("site"),
                pack(site),
                pack("version"),
                pack(version),
                pack("config_hash"),
                pack(config_hash),
                pack("kind"),
                pack(kind),
                pack("revision"),
                pack(revision),
                pack("replayed"),
                pack(replayed),
                pack("seq"),
            )
        )
        if len(self._prefixes) >= _CACHE_LIMIT:
            self._prefixes.clear()
        self._prefixes[key] = prefix
        return prefix

    def _keys_of(self, pipeline: str) -> dict[str, tuple[bytes, str]]:
        keys = self._streams.get(pipeline)
        if keys is None:
            if len(self._streams) >= 256:
                self._streams.clear()
            keys = self._streams[pipeline] = {}
        return keys

    def _stream(
        self, keys: dict[str, tuple[bytes, str]], pipeline: str, key: str
    ) -> tuple[bytes, str]:
        pack = self._packer.pack
        block = b"".join((pack("pipeline"), pack(pipeline), pack("key"), pack(key), pack("stats")))
        if len(keys) >= _CACHE_LIMIT:
            keys.clear()
        entry = keys[key] = (block, f"{pipeline}/{key}")
        return entry

    def _rows(  # noqa: PLR0915 - one flat loop: it runs per record
        self,
        items: Sequence[Any],
        site_wrap: SiteWrap | None,
        fixed: int | None,
        seq: int,
        out: tuple[list[object], list[int]],
    ) -> tuple[int, int]:
        flat, counts = out
        pack = self._packer.pack
        join = _JOIN
        crc32 = zlib.crc32
        isfinite = math.isfinite
        head32, head16, times = _HEAD32, _HEAD16, _TIMES_PACK
        k_ws, k_we, k_ca, k_id32 = _K_WINDOW_START, _K_WINDOW_END, _K_CREATED_AT, _K_ID32
        tail_plain = _TAIL_PLAIN
        prefixes = self._prefixes
        prefix = b""
        l_site = l_version = l_config_hash = l_kind = l_revision = l_replayed = _UNSET
        last_pipeline: Any = _UNSET
        keys: dict[str, tuple[bytes, str]] = {}
        site = version = config_hash = None
        created_at: Any = None
        replayed: Any = False
        backlog = False
        if site_wrap is not None:  # items are summaries: the site's fields are the wrap's
            site, version, config_hash = site_wrap.site, site_wrap.version, site_wrap.config_hash
            created_at, replayed = site_wrap.created_at, site_wrap.replayed
        nbytes = 0
        for item in items:
            if site_wrap is None:
                site = item.site
                version = item.version
                config_hash = item.config_hash
                replayed = item.replayed
                created_at = item.created_at
                backlog = item.backlog
                eid = item.id
            else:
                eid = envelope_id(site, item)  # type: ignore[arg-type]
            kind = item.kind
            revision = item.revision
            pipeline = item.pipeline
            key = item.key
            ws = item.window_start
            we = item.window_end
            attrs = item.attrs
            try:
                if not (
                    kind is l_kind
                    and site is l_site
                    and revision is l_revision
                    and version is l_version
                    and config_hash is l_config_hash
                    and replayed is l_replayed
                ):  # the cached prefix of the previous record does not do: look it up
                    pkey = (site, version, config_hash, kind, revision, replayed)
                    prefix = prefixes.get(pkey) or self._prefix(pkey)
                    l_site, l_version, l_config_hash, l_kind, l_revision, l_replayed = pkey
                if pipeline is not last_pipeline:
                    keys = self._keys_of(pipeline)
                    last_pipeline = pipeline
                block, stream = keys.get(key) or self._stream(keys, pipeline, key)
                if (
                    ws.__class__ is not float
                    or we.__class__ is not float
                    or created_at.__class__ is not float
                ):
                    raise TypeError("not a float")  # an int stays an int: the reference does it
                idb = eid.encode()
                head: bytes | bytearray
                if len(idb) == 32 and 0xFFFF < seq <= 0xFFFFFFFF:
                    head = head32(0xCE, seq, k_ws, ws, k_we, we, k_ca, created_at, k_id32, idb)
                elif len(idb) == 32 and 0xFF < seq <= 0xFFFF:
                    head = head16(0xCD, seq, k_ws, ws, k_we, we, k_ca, created_at, k_id32, idb)
                else:
                    head = join(
                        (pack(seq), times(k_ws, ws, k_we, we, k_ca, created_at), _K_ID, pack(eid))
                    )
                stats = item.stats
                try:
                    finite = isfinite(sum(stats.values()))
                except TypeError:  # a None among them (or not numbers: packing tells)
                    finite = False
                if not finite or stats.__class__ is not dict:
                    stats = _finite_stats(stats)
                payload = join(
                    (
                        prefix,
                        head,
                        block,
                        pack(stats),
                        join((_K_ATTRS, pack(dict(attrs)), _BACKLOG[bool(backlog)]))
                        if attrs
                        else tail_plain[bool(backlog)],
                    )
                )
            except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
                envelope = item if site_wrap is None else site_wrap(item, seq)
                payload = bytearray(encode_payload(envelope, seq))  # the reference; may raise
                stream = envelope.stream
            if fixed is not None:
                cls = fixed
            elif kind == "alert":
                cls = 0
            elif backlog or (attrs and "compacted_from" in attrs):
                cls = 2
            else:
                cls = 1
            flat += (
                (cls << PRIORITY_SHIFT) | seq,
                stream,
                eid,
                ws,
                we,
                created_at,
                crc32(payload),
                payload,
            )
            counts[cls] += 1
            nbytes += len(payload)
            seq += 1
        return seq, nbytes
