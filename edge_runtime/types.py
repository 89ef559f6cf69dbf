"""The data types every stage shares, in the order data meets them: a raw message from a
source, a batch of decoded readings, a summary a pipeline emits, and the envelope a summary
travels in from the site to the core."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import numpy.typing as npt
import orjson

from edge_runtime.errors import DecodeError

__all__ = [
    "ENVELOPE_SCHEMA",
    "Envelope",
    "KeyTable",
    "RawMessage",
    "ReadingBatch",
    "Stat",
    "Summary",
    "SummaryKind",
    "envelope_id",
    "replay_namespace",
    "window_id",
]

Stat = float | int | None
SummaryKind = Literal["summary", "correction", "alert"]


class KeyTable(dict[str, int]):
    """Interns key strings to dense int32 codes, shared by all batches of one pipeline.

    Decoding maps keys with ``map(table.__getitem__, keys)`` so a new key costs one insertion
    and a known key one C-level dict lookup; ``names[code]`` maps back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __missing__(self, key: str) -> int:
        code = len(self.names)
        self.names.append(key)
        self[key] = code
        return code

    def encode(self, keys: Sequence[str]) -> npt.NDArray[np.int32]:
        return np.fromiter(map(self.__getitem__, keys), dtype=np.int32, count=len(keys))

    def prefixed(self, prefix: str) -> _PrefixTable:
        """A view that maps ``name`` to the code of ``prefix + name`` without building the
        joined string for names seen before (SenML base name + name)."""
        views: dict[str, _PrefixTable] = self.__dict__.setdefault("_views", {})
        view = views.get(prefix)
        if view is None:
            if len(views) > 4096:
                views.clear()
            view = views[prefix] = _PrefixTable(self, prefix)
        return view


class _PrefixTable(dict[str, int]):
    def __init__(self, table: KeyTable, prefix: str) -> None:
        super().__init__()
        self.table = table
        self.prefix = prefix

    def __missing__(self, name: str) -> int:
        code = self[name] = self.table[self.prefix + name]
        return code


@dataclass(slots=True)
class RawMessage:
    """One message as the transport received it; the only message type past the ingest layer.

    Treat it as immutable (it is not frozen only because frozen dataclasses cost several times
    more to build, and one is built per message).

    ``dup`` is the MQTT DUP flag: the broker sent this message before, on a connection whose
    PUBACK never came back. Only the gmqtt transport reports it; aiomqtt's messages do not carry
    it, so it stays False there.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0
    dup: bool = False


@dataclass(slots=True, frozen=True)
class ReadingBatch:
    """Readings decoded from a micro-batch of messages, as parallel numpy arrays.

    ``values`` is float64 and holds NaN for a missing value; ``times`` are event times in
    seconds since the epoch; ``keys`` are codes into ``key_table``.
    """

    keys: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]
    key_table: KeyTable
    received_at: float = 0.0
    replayed: bool = False

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def empty(cls, key_table: KeyTable, received_at: float = 0.0) -> ReadingBatch:
        return cls(
            keys=np.empty(0, dtype=np.int32),
            values=np.empty(0, dtype=np.float64),
            times=np.empty(0, dtype=np.float64),
            key_table=key_table,
            received_at=received_at,
        )


@dataclass(slots=True)
class Summary:
    """A distilled result a pipeline emits; the uplink wraps it into an envelope. Treat it as
    immutable (not frozen for construction speed: one is built per window and key).

    ``revision`` is 0 for the first emission of a window and grows with each correction, so
    that ``(pipeline, key, window_start, window_end, kind, revision)`` identifies it for good.
    A window emitted again with a result that may differ from an earlier emission (after a
    crash that lost QoS 0 input, after a clean stop that flushed it half-way) also gets a
    higher revision: two different results of one window never share an envelope id. The
    core keeps the highest revision (counting the others as superseded), per part of the
    window when ``attrs["part"]`` says the result is one part of it (see
    :attr:`~edge_runtime.pipelines.api.RestoreInfo.part`).
    """

    pipeline: str
    key: str
    window_start: float
    window_end: float
    stats: Mapping[str, Stat]
    kind: SummaryKind = "summary"
    revision: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)


ENVELOPE_SCHEMA = 1
_JSON_HEAD = b'{"schema":%d,' % ENVELOPE_SCHEMA


def replay_namespace(config_hash: str) -> str:
    """The id namespace of summaries made by replaying a recording into a site with the
    config of ``config_hash``: never the live one (empty), so that a replayed window's result
    never collides with the live result of the same window, and a replay with another config
    never collides with this one."""
    return f"replay/{config_hash}"


def _ident(
    site: str, pipeline: str, key: str, *, start: float, end: float, namespace: str
) -> list[str]:
    ident = [site, pipeline, key, repr(float(start)), repr(float(end))]
    if namespace:
        ident.append(namespace)
    return ident


def envelope_id(site: str, summary: Summary, *, namespace: str = "") -> str:
    """The id of one result of one window: site, pipeline, key, window, kind and revision
    (and ``namespace``, see :func:`replay_namespace`; live summaries have none, so their ids
    are what they always were). The same result sent twice has the same id (the core drops
    the duplicate); a different result of the same window must carry a higher revision
    (a correction, or a re-emission that may differ: see :class:`Summary`)."""
    ident = _ident(
        site,
        summary.pipeline,
        summary.key,
        start=summary.window_start,
        end=summary.window_end,
        namespace=namespace,
    )
    ident[5:5] = [summary.kind, str(summary.revision)]
    return hashlib.blake2b("\x1f".join(ident).encode(), digest_size=16).hexdigest()


def window_id(
    site: str,
    pipeline: str,
    key: str,
    *,
    start: float,
    end: float,
    kind: SummaryKind,
    namespace: str = "",
) -> str:
    """What the revisions of one window's result share (an envelope id without kind and
    revision): the core keeps the highest revision per window id. A ``"correction"`` is the
    same window's result as its ``"summary"``; an ``"alert"`` is a family of its own."""
    ident = _ident(site, pipeline, key, start=start, end=end, namespace=namespace)
    ident.append("alert" if kind == "alert" else "result")
    return hashlib.blake2b("\x1f".join(ident).encode(), digest_size=16).hexdigest()


@dataclass(slots=True, frozen=True)
class Envelope:
    """A summary with the site-level facts the core needs."""

    id: str
    site: str
    seq: int
    pipeline: str
    key: str
    window_start: float
    window_end: float
    stats: Mapping[str, Stat]
    kind: SummaryKind
    revision: int
    created_at: float
    version: str
    config_hash: str
    backlog: bool = False
    replayed: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)
    resent: bool = field(default=False, metadata={"omit_default": True})
    """Set by the site on a record it sends again because the core has not acknowledged it
    (after ``uplink.ack_timeout_s`` or a reconnect); the core counts these. Transport
    metadata: not part of the id, and absent from the wire document when false."""
    site_revision: str = field(default="", metadata={"omit_default": True})
    """The id of the site's revision (:class:`edge_runtime.fleet.Revision`: runtime version,
    config hash, plugins, models, image) when the site accepted the summary; "" from a site
    that does not say. Not part of the id; absent from the wire document when empty."""

    @classmethod
    def wrap(
        cls,
        summary: Summary,
        *,
        site: str,
        seq: int,
        created_at: float,
        version: str,
        config_hash: str,
        replayed: bool = False,
        site_revision: str = "",
    ) -> Envelope:
        namespace = replay_namespace(config_hash) if replayed else ""
        return cls(
            id=envelope_id(site, summary, namespace=namespace),
            site=site,
            seq=seq,
            pipeline=summary.pipeline,
            key=summary.key,
            window_start=summary.window_start,
            window_end=summary.window_end,
            stats=summary.stats,
            kind=summary.kind,
            revision=summary.revision,
            created_at=created_at,
            version=version,
            config_hash=config_hash,
            replayed=replayed,
            attrs=summary.attrs,
            site_revision=site_revision,
        )

    @property
    def namespace(self) -> str:
        """The id namespace: empty for live results, :func:`replay_namespace` for replayed."""
        return replay_namespace(self.config_hash) if self.replayed else ""

    @property
    def window_id(self) -> str:
        """See :func:`window_id`: what the revisions of this window's result share."""
        return window_id(
            self.site,
            self.pipeline,
            self.key,
            start=self.window_start,
            end=self.window_end,
            kind=self.kind,
            namespace=self.namespace,
        )

    @property
    def stream(self) -> str:
        """Ordering is kept per stream: one pipeline's one key."""
        return f"{self.pipeline}/{self.key}"

    def as_backlog(self) -> Envelope:
        return replace(self, backlog=True)

    def as_resent(self) -> Envelope:
        return replace(self, resent=True)

    def to_dict(self) -> dict[str, Any]:
        """The wire document: ``schema``, then every field in declaration order (mappings as
        plain dicts; a NaN or infinite stat as None). A field marked ``omit_default`` is left
        out while it holds its default."""
        doc: dict[str, Any] = {"schema": ENVELOPE_SCHEMA}
        for codec in _ENVELOPE_CODECS:
            value = getattr(self, codec.name)
            if codec.omit_default and codec.default is not None and value == codec.default():
                continue
            doc[codec.name] = codec.encode(value)
        return doc

    def to_json(self) -> bytes:
        """The wire document as JSON, several times faster than ``orjson.dumps(to_dict())``:
        orjson serialises the dataclass itself (NaN and infinities become null, as in
        :meth:`to_dict`), behind ``schema``; every field is written, ``resent`` too."""
        try:
            return _JSON_HEAD + orjson.dumps(self)[1:]
        except TypeError:  # a mapping orjson does not know (not a dict): the long way
            return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Envelope:
        """The envelope of a wire document.  A field with a default may be missing, null or
        empty (any false value: it gets the default); anything else wrong raises
        :class:`DecodeError` (``wrong_schema``, ``malformed_envelope``)."""
        try:
            if doc.get("schema") != ENVELOPE_SCHEMA:
                raise DecodeError("wrong_schema", f"envelope schema {doc.get('schema')!r}")
            values: dict[str, Any] = {}
            for codec in _ENVELOPE_CODECS:
                if codec.default is None:
                    values[codec.name] = codec.decode(doc[codec.name])
                else:
                    raw = doc.get(codec.name)
                    values[codec.name] = codec.decode(raw) if raw else codec.default()
            return cls(**values)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError("malformed_envelope", f"{exc!r}") from exc


def _finite_stats(stats: Mapping[str, Stat]) -> dict[str, Stat]:
    return {k: _finite(v) for k, v in stats.items()}


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class _FieldCodec:
    """How one envelope field goes to and comes from its wire document."""

    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    default: Callable[[], Any] | None
    """What a missing field becomes; None: the field is required."""
    omit_default: bool = False
    """Left out of the wire document while it holds its default (flags added later)."""


def _field_codecs(cls: type[Any]) -> tuple[_FieldCodec, ...]:
    """One codec per dataclass field of ``cls``, chosen by its type: scalars are converted
    with their type, mappings become dicts (of finite stats for a mapping of :data:`Stat`),
    literals pass as they are."""
    hints = get_type_hints(cls)
    codecs = []
    for f in fields(cls):
        hint = hints[f.name]
        encode: Callable[[Any], Any] = _same
        decode: Callable[[Any], Any]
        if hint in (str, int, float, bool):
            decode = hint
        elif get_origin(hint) is Literal:
            decode = _same
        elif get_origin(hint) is Mapping:
            encode = _finite_stats if get_args(hint) == (str, Stat) else dict
            decode = dict
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no wire form for {hint!r}")
        default: Callable[[], Any] | None = None
        if f.default_factory is not MISSING:
            default = f.default_factory
        elif f.default is not MISSING:
            default = functools.partial(_same, f.default)
        omit = bool(f.metadata.get("omit_default", False))
        codecs.append(_FieldCodec(f.name, encode, decode, default, omit))
    return tuple(codecs)


_ENVELOPE_CODECS = _field_codecs(Envelope)


def _finite(value: Stat) -> Stat:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf have no JSON form; None means "no value" (e.g. stddev of 0 readings)
    return value
