"""Payload decoders: a micro-batch of messages in, one :class:`ReadingBatch` out.

Each decoder works on the whole batch at once.  The common case goes through C-level loops
(``map`` over ``orjson.loads`` / ``msgpack.unpackb`` / ``operator.itemgetter`` and numpy); only
when that fast path meets a bad message does the decoder fall back to one message at a time, to
set the bad ones aside with a reason and keep the good ones.  A SenML pack of the usual shape
(base fields on its first record, numeric values) is decoded by msgspec into typed records,
which checks the types in C and allocates no dicts; any other pack takes the general path.

Reasons (the ``reason`` label of ``edge_decode_errors_total``): ``malformed_json``,
``malformed_msgpack``, ``malformed_senml``, ``not_an_object``, ``missing_field``,
``wrong_type``, ``unknown_field``, ``non_numeric_value`` (a SenML string, boolean, data or
sum-only record), ``missing_value`` (a SenML record with no value at all).

Numbers are read as IEEE float64 (see :mod:`edge_runtime.aggregation.stats` for the range).
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import msgpack
import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from edge_runtime.decode.senml import (
    NUMERIC,
    NUMERIC_OR_NONE,
    base_values,
    numeric_column,
    resolve_relative,
    senml_codes,
)
from edge_runtime.decode.spec import DecodeSpec
from edge_runtime.errors import DecodeError
from edge_runtime.types import KeyTable, RawMessage, ReadingBatch

__all__ = ["ReadingDecoder"]

# RFC 8428 labels (JSON); a label ending in '_' is "must understand".
_SENML_LABELS = frozenset(
    {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
)


_Value = float | None | msgspec.UnsetType  # UNSET: the record carries no "v" at all


class _SenmlHead(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """The first record of a pack, as the typed fast path decodes it: it may carry base fields.

    Types are checked in C while decoding.  Anything this does not describe (a string, bool or
    data value, a field outside RFC 8428, a wrong type) fails the typed decode, and the pack
    goes through the general path, which names the reason."""

    n: str = ""
    v: _Value = msgspec.UNSET
    t: float = 0.0
    bn: str | None = None
    bt: float | None = None
    bv: float | None = None
    u: Any = None
    s: Any = None
    ut: Any = None
    bu: Any = None
    bs: Any = None
    bver: Any = None


class _SenmlRecord(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A record after the first in the fast path: no base fields, a numeric value or none."""

    n: str = ""
    v: _Value = msgspec.UNSET
    t: float = 0.0
    u: Any = None
    s: Any = None
    ut: Any = None


_senml_head = msgspec.json.Decoder(list[_SenmlHead])
_senml_rest = msgspec.json.Decoder(list[_SenmlRecord])
_get_n = operator.attrgetter("n")
_get_v = operator.attrgetter("v")
_get_t = operator.attrgetter("t")
_COMMA, _CLOSE = ord(","), ord("]")

Doc = Any


def _path_getter(path: str) -> Callable[[Doc], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        return operator.itemgetter(parts[0])

    def get(doc: Doc) -> Any:
        for part in parts:
            doc = doc[part]
        return doc

    return get


class ReadingDecoder:
    """Decodes batches for one pipeline according to its :class:`DecodeSpec`."""

    def __init__(self, spec: DecodeSpec, key_table: KeyTable | None = None) -> None:
        self.spec = spec
        self.key_table = key_table if key_table is not None else KeyTable()
        self._scale = spec.time_scale
        self._allowed = frozenset(spec.allowed_fields) if spec.allowed_fields is not None else None
        kind, _, arg = spec.key.partition(":")
        self._key_kind = kind
        self._key_level = int(arg) if kind == "topic" else 0
        self._key_const = arg if kind == "const" else ""
        self._key_get = _path_getter(arg) if kind == "field" else None
        self._value_get = _path_getter(spec.value.partition(":")[2])
        self._time_get = (
            _path_getter(spec.time.partition(":")[2]) if spec.time != "received" else None
        )
        self._loads: Callable[[bytes], Doc] = (
            orjson.loads if spec.format in ("json", "senml") else self._unpack
        )
        self._malformed = "malformed_msgpack" if spec.format == "msgpack" else "malformed_json"

    @staticmethod
    def _unpack(payload: bytes) -> Doc:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)

    def decode(self, messages: Sequence[RawMessage], errors: Counter[str]) -> ReadingBatch:
        """Decode ``messages``; bad ones are counted in ``errors`` by reason and skipped."""
        received_at = messages[-1].received_at if messages else 0.0
        if not messages:
            return ReadingBatch.empty(self.key_table, received_at)
        if self.spec.format == "senml":
            return self._decode_senml(messages, errors, received_at)
        try:
            return self._decode_fast(messages, received_at)
        except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException):
            pass
        good: list[RawMessage] = []
        for msg in messages:
            try:
                self._decode_fast([msg], received_at)
            except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
                errors[self._classify(msg, exc)] += 1
            else:
                good.append(msg)
        if not good:
            return ReadingBatch.empty(self.key_table, received_at)
        return self._decode_fast(good, received_at)

    # -- json / msgpack --------------------------------------------------------------------------

    def _decode_fast(self, messages: Sequence[RawMessage], received_at: float) -> ReadingBatch:
        docs = list(map(self._loads, map(operator.attrgetter("payload"), messages)))
        if not set(map(type, docs)) <= {dict}:
            raise TypeError("not an object")
        if self._allowed is not None and not set().union(*docs) <= self._allowed:
            raise KeyError("unknown field")
        raw_values = list(map(self._value_get, docs))
        if not set(map(type, raw_values)) <= NUMERIC_OR_NONE:
            raise TypeError("value")
        values = np.array(raw_values, dtype=np.float64)
        if self._time_get is None:
            times = np.fromiter(
                map(operator.attrgetter("received_at"), messages), np.float64, len(messages)
            )
        else:
            raw_times = list(map(self._time_get, docs))
            if not set(map(type, raw_times)) <= NUMERIC:
                raise TypeError("time")
            times = np.array(raw_times, dtype=np.float64) * self._scale
            if not np.isfinite(times).all():
                raise TypeError("time")
        keys = self._keys(messages, docs)
        return ReadingBatch(
            keys=self.key_table.encode(keys),
            values=values,
            times=times,
            key_table=self.key_table,
            received_at=received_at,
        )

    def _keys(self, messages: Sequence[RawMessage], docs: Sequence[Doc]) -> list[str]:
        if self._key_kind == "topic":
            topics = map(operator.attrgetter("topic"), messages)
            return list(
                map(operator.itemgetter(self._key_level), map(str.split, topics, repeat("/")))
            )
        if self._key_kind == "const":
            return [self._key_const] * len(docs)
        assert self._key_get is not None
        keys = list(map(self._key_get, docs))
        if not set(map(type, keys)) <= {str}:
            if set(map(type, keys)) <= {str, int}:
                return list(map(str, keys))
            raise TypeError("key")
        return keys

    def _classify(self, msg: RawMessage, exc: Exception) -> str:
        try:
            doc = self._loads(msg.payload)
        except (ValueError, TypeError, msgpack.UnpackException):
            return self._malformed
        if not isinstance(doc, dict):
            return "not_an_object"
        if self._allowed is not None and not set(doc) <= self._allowed:
            return "unknown_field"
        if isinstance(exc, IndexError):
            return "missing_field"  # topic has fewer levels than the key source asks for
        for getter in (self._value_get, self._time_get, self._key_get):
            if getter is None:
                continue
            try:
                getter(doc)
            except (KeyError, TypeError, IndexError):
                return "missing_field"
        return "wrong_type"

    # -- senml -----------------------------------------------------------------------------------

    def _decode_senml(
        self, messages: Sequence[RawMessage], errors: Counter[str], received_at: float
    ) -> ReadingBatch:
        parts: list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64]]]
        parts = []
        for msg in messages:  # per pack; the work inside a pack is vectorised
            try:
                part = self._senml_typed_pack(msg)
                parts.append(part if part is not None else self._senml_pack(msg, errors))
            except DecodeError as exc:
                errors[exc.reason] += 1
        if not parts:
            return ReadingBatch.empty(self.key_table, received_at)
        codes = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
        times = np.concatenate([p[2] for p in parts])
        return ReadingBatch(
            keys=codes,
            values=values,
            times=times,
            key_table=self.key_table,
            received_at=received_at,
        )

    def _senml_typed_pack(
        self, msg: RawMessage
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """The usual pack (base fields on the first record only, numeric values), decoded by
        typed decoders; None sends the pack to the general path (:meth:`_senml_pack`).

        The pack is split after the first ``}``: the head is decoded as a record that may carry
        base fields, the rest as records that may not.  A ``}`` inside a string of the first
        record leaves the head's string unterminated, so a wrong split fails to decode and
        falls back; so does whitespace right after the first record."""
        payload = msg.payload
        end = payload.find(b"}") + 1
        if not payload.startswith(b"[{") or end == 0 or end >= len(payload):
            return None
        sep = payload[end]
        try:
            head = _senml_head.decode(payload[:end] + b"]")[0]
            if sep == _CLOSE and end == len(payload) - 1:
                rest: list[_SenmlRecord] = []
            elif sep == _COMMA:
                rest = _senml_rest.decode(b"[" + payload[end + 1 :])
            else:
                return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        n = len(rest) + 1
        values_in = [head.v, *map(_get_v, rest)]
        if msgspec.UNSET in values_in:
            return None  # a record without a value: the general path sets it aside
        names = [head.n, *map(_get_n, rest)]
        base = head.bn or ""
        if not base and "" in names:
            raise DecodeError("malformed_senml", "a record resolves to an empty name")
        values = np.array(values_in, dtype=np.float64)  # None (null) becomes NaN
        if head.bv is not None:
            values += head.bv
        times = np.fromiter(map(_get_t, rest), dtype=np.float64, count=n - 1)
        times = np.concatenate(([head.t], times))
        if head.bt is not None:
            times += head.bt
        resolve_relative(times, msg.received_at)
        codes = self._pack_key_codes(msg, n)
        if codes is None:
            view = self.key_table.prefixed(base)
            codes = np.fromiter(map(view.__getitem__, names), dtype=np.int32, count=n)
        return codes, values, times

    def _pack_key_codes(self, msg: RawMessage, n: int) -> npt.NDArray[np.int32] | None:
        """Key codes of a pack whose key comes from the topic or a constant; None when the
        key is the SenML name (the caller resolves names)."""
        if self._key_kind == "topic":
            levels = msg.topic.split("/")
            try:
                return np.full(n, self.key_table[levels[self._key_level]], dtype=np.int32)
            except IndexError as exc:
                raise DecodeError("missing_field", "topic has too few levels for the key") from exc
        if self._key_kind == "const":
            return np.full(n, self.key_table[self._key_const], dtype=np.int32)
        return None

    def _senml_pack(
        self, msg: RawMessage, errors: Counter[str] | None = None
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Any pack, record by record. Records without a numeric value are set aside and
        counted in ``errors``: a string, boolean or data value as ``non_numeric_value``, no
        value at all as ``missing_value`` (RFC 8428 requires one; ``"v": null`` is read as a
        missing reading)."""
        try:
            records = orjson.loads(msg.payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("malformed_json", str(exc)) from exc
        if not isinstance(records, list) or not records:
            raise DecodeError("malformed_senml", "a SenML pack is a non-empty JSON array")
        if not set(map(type, records)) <= {dict}:
            raise DecodeError("malformed_senml", "every SenML record must be a JSON object")
        # labels after the first record tell whether base fields are set only up front (the
        # usual pack), which lets them apply as scalars instead of forward-filled columns
        rest: set[str] = set().union(*records[1:]) if len(records) > 1 else set()
        labels = rest.union(records[0])
        unknown = labels - _SENML_LABELS
        if any(label.endswith("_") for label in unknown):
            raise DecodeError("unknown_field", f"must-understand fields {sorted(unknown)}")
        n = len(records)
        get = dict.get
        try:
            codes = senml_codes(records, rest, self.key_table)
            values = numeric_column(list(map(get, records, repeat("v"))), math.nan)
            if "bv" in labels:
                values += base_values(records, "bv", rest)
            if "t" in labels:
                times = numeric_column(list(map(get, records, repeat("t"), repeat(0.0))), 0.0)
            else:
                times = np.zeros(n)
            if "bt" in labels:
                times += base_values(records, "bt", rest)
        except TypeError as exc:
            raise DecodeError("wrong_type", f"SenML field has the wrong type ({exc})") from exc
        except ValueError as exc:
            raise DecodeError("malformed_senml", "a record resolves to an empty name") from exc
        resolve_relative(times, msg.received_at)
        keyed = self._pack_key_codes(msg, n)
        if keyed is not None:
            codes = keyed
        numeric = np.fromiter(("v" in r for r in records), dtype=bool, count=n)
        if not numeric.all():
            other = np.fromiter(
                ("vs" in r or "vb" in r or "vd" in r or "s" in r for r in records),
                dtype=bool,
                count=n,
            )
            if errors is not None:
                _count(errors, "non_numeric_value", int((other & ~numeric).sum()))
                _count(errors, "missing_value", int((~other & ~numeric).sum()))
            codes, values, times = codes[numeric], values[numeric], times[numeric]
        return codes, values, times


def _count(errors: Counter[str], reason: str, n: int) -> None:
    if n:
        errors[reason] += n
