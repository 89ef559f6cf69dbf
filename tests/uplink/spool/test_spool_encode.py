"""The writer's row encoder against the reference encoding of an envelope."""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType, SimpleNamespace
from typing import Any

import msgpack
import numpy as np
import pytest

from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.envelope import decode_envelopes
from edge_runtime.uplink.spool import SiteWrap, SpoolConfig, SpoolError, SyncSpool
from edge_runtime.uplink.spool._encode import encode_rows
from edge_runtime.uplink.spool.records import (
    PRIORITY_SHIFT,
    encode_payload,
    flag_backlog,
    pack_message,
    priority_for,
)
from tests.uplink.spool.spool_helpers import T0, envelopes, summary, wrap_at


def typed(value: Any) -> Any:
    """``value`` with the type of every scalar in it, so that 1 and 1.0 and True differ."""
    if isinstance(value, Mapping):
        return [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return (float, "nan")
    return (type(value), value)


def typed_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An envelope document with typed values (entry order aside: the spool writes its own)."""
    return {k: typed(v) for k, v in doc.items()}


def expected_doc(env: Envelope, seq: int) -> dict[str, Any]:
    return {**env.to_dict(), "seq": seq}


def rows_of(items: list[Any], seq: int, **kw: Any) -> list[tuple[Any, ...]]:
    out = encode_rows(items, kw.get("wrap"), kw.get("fixed"), seq)
    rows = out.rows
    assert (out.first_seq, out.end_seq) == (seq, seq + len(items)) and len(rows) == len(items)
    assert out.nbytes == sum(len(r[7]) for r in rows)
    assert out.counts == [sum(1 for r in rows if r[0] >> PRIORITY_SHIFT == c) for c in range(3)]
    return list(rows)


def check_row(row: tuple[Any, ...], env: Envelope, seq: int, fixed: int | None = None) -> None:
    rid, stream, eid, ws, we, created, crc, payload = row
    cls = priority_for(env) if fixed is None else fixed
    assert rid == (cls << PRIORITY_SHIFT) | seq
    assert (stream, eid) == (env.stream, env.id)
    assert typed((ws, we, created)) == typed((env.window_start, env.window_end, env.created_at))
    assert crc == zlib.crc32(payload)
    doc = msgpack.unpackb(payload)
    assert typed_doc(doc) == typed_doc(expected_doc(env, seq))
    assert list(doc)[-1] == "backlog"
    # byte for byte what msgpack writes for that document in that order (smallest int forms...)
    assert bytes(payload) == msgpack.packb(doc, use_bin_type=True)
    assert payload[-1:] == msgpack.packb(env.backlog)
    # the reference encoding writes the very same bytes
    assert encode_payload(env, seq) == payload


_TEXT = ["", "a", "ü", "日本語", "x" * 31, "y" * 32, "z" * 33, "é" * 40, "w" * 300, "k\x1fk"]


def random_stats(rng: random.Random) -> Mapping[str, Any]:
    values: list[Any] = [
        0,
        -1,
        12,
        2**40,
        -(2**63),
        1.5,
        -0.0,
        1e300,
        None,
        math.nan,
        math.inf,
        -math.inf,
        True,
        3.25,
    ]
    stats = {
        rng.choice(["count", "mean", "p99", "ü-key", "k" * 40, str(i)]): rng.choice(values)
        for i in range(rng.randrange(0, 12))
    }
    return MappingProxyType(stats) if rng.random() < 0.1 else stats


def random_envelope(rng: random.Random) -> Envelope:
    def number() -> Any:
        return rng.choice([T0 + rng.random() * 1e6, float(rng.randrange(10**9)), 17, 0.0])

    attrs: Mapping[str, Any] = rng.choice(
        [
            {},
            {},
            {"compacted_from": 3, "merged_seqs": [1, 2, 3]},
            {"ü": "ß", "n": None, "nested": {"a": [1.5, "b"]}},
            MappingProxyType({"x": 1}),
        ]
    )
    return Envelope(
        id=rng.choice(
            ["ab" * 16, "0123456789abcdef" * 2, "", "short", "é" * 16, "f" * 40, "ü" * 100]
        ),
        site=rng.choice(["site-1", "site-2", "日本", "s" * 40]),
        seq=rng.randrange(0, 10),  # ignored: the spool assigns it
        pipeline=rng.choice(["counts", "temp", "ü", "p" * 35]),
        key=rng.choice(_TEXT),
        window_start=number(),
        window_end=number(),
        stats=random_stats(rng),
        kind=rng.choice(["summary", "correction", "alert"]),
        revision=rng.choice([0, 1, 255, 70_000, 2**40]),
        created_at=rng.choice([time.time(), 1_700_000_000, 0.5]),
        version=rng.choice(["0.1", "1.2.3-ü", ""]),
        config_hash=rng.choice(["c", "ab" * 20]),
        backlog=rng.random() < 0.3,
        replayed=rng.random() < 0.3,
        attrs=attrs,
    )


SEQ_STARTS = [1, 100, 127, 250, 255, 256, 65_530, 65_536, 2**32 - 3, 2**32, 2**40]


@pytest.mark.parametrize("start", SEQ_STARTS)
def test_random_envelopes_decode_as_their_reference(start: int) -> None:
    rng = random.Random(start)
    for _ in range(20):
        batch = [random_envelope(rng) for _ in range(rng.randrange(1, 40))]
        rows = rows_of(batch, start)
        for i, (row, env) in enumerate(zip(rows, batch, strict=True)):
            check_row(row, env, start + i)
        start += len(batch)


def test_every_field_of_every_row_is_its_own() -> None:
    base = envelopes(1)[0]
    variants = [
        base,
        replace(base, site="".join(["site", "-1"])),  # equal, not identical
        replace(base, site="site-2"),
        replace(base, version="v2"),
        replace(base, config_hash="other"),
        replace(base, kind="alert"),
        replace(base, revision=1),
        replace(base, replayed=True),
        replace(base, backlog=True),
        replace(base, pipeline="".join(["cou", "nts"])),
        replace(base, pipeline="other"),
        replace(base, key="k-other"),
        replace(base, attrs={"a": 1}),
        base,
    ]
    for rounds in range(2):
        seq = 300 + rounds * 100_000
        for i, row in enumerate(rows_of(variants, seq)):
            check_row(row, variants[i], seq + i)


def test_fixed_priority_and_message_round_trip() -> None:
    batch = envelopes(20, streams=3)
    rows = rows_of(batch, 1000, fixed=2)
    for i, row in enumerate(rows):
        check_row(row, batch[i], 1000 + i, fixed=2)
    payloads = [bytes(r[7]) for r in rows]
    flagged = [flag_backlog(p) for p in payloads]
    decoded = decode_envelopes(pack_message(payloads + flagged))
    want = [replace(e, seq=1000 + i) for i, e in enumerate(batch)]
    assert decoded == want + [e.as_backlog() for e in want]


def test_non_finite_stats_are_stored_as_none() -> None:
    env = replace(envelopes(1)[0], stats={"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1})
    (row,) = rows_of([env], 70_000)
    assert msgpack.unpackb(row[7])["stats"] == {"a": None, "b": None, "c": None, "d": 1}
    # finite values whose sum overflows stay as they are
    big = replace(env, stats={"a": 1e308, "b": 1e308, "c": None})
    (row,) = rows_of([big], 70_001)
    assert msgpack.unpackb(row[7])["stats"] == {"a": 1e308, "b": 1e308, "c": None}


def test_unencodable_envelope_raises() -> None:
    bad = replace(envelopes(1)[0], attrs={"x": object()})
    with pytest.raises(TypeError):
        rows_of([bad], 1)
    bad_stats = replace(envelopes(1)[0], stats={"x": object()})
    with pytest.raises(TypeError):
        rows_of([bad_stats], 1)


def random_summary(rng: random.Random) -> Summary:
    env = random_envelope(rng)
    return Summary(
        env.pipeline,
        env.key,
        env.window_start,
        env.window_end,
        env.stats,
        kind=env.kind,
        revision=env.revision,
        attrs=env.attrs,
    )


@pytest.mark.parametrize("start", [1, 256, 70_000, 2**32])
def test_site_wrap_rows_equal_the_wrapped_envelopes(start: int) -> None:
    rng = random.Random(start)
    for site, created_at, replayed in (("site-1", time.time(), False), ("日本", 17, True)):
        wrap = SiteWrap(site, created_at, "0.1", "cfg", replayed=replayed)  # type: ignore[arg-type]
        summaries = [random_summary(rng) for _ in range(60)]
        fast = rows_of(summaries, start, wrap=wrap)
        # the same wrap as a bound method: the spool calls it and encodes its envelopes
        slow = rows_of(summaries, start, wrap=wrap.__call__)
        assert fast == slow
        for i, row in enumerate(fast):
            check_row(row, wrap(summaries[i], start + i), start + i)
        start += len(summaries)


def test_site_wrap_through_the_spool(spool_config: SpoolConfig) -> None:
    now = time.time()
    wrap = SiteWrap("site-1", now, "test", "cfg")
    reference = wrap_at(now)  # Envelope.wrap with the same fields
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(3))
        summaries = [summary(f"k{i % 4}", i) for i in range(50)]
        assert spool.append_summaries(summaries, wrap) == range(4, 54)
        leased = spool.lease(100)
        got = [r.envelope() for r in leased[3:]]
        assert got == [reference(s, 4 + i) for i, s in enumerate(summaries)]
        bad = [summary("x", 1), replace(summary("x", 2), attrs={"o": object()})]
        with pytest.raises(SpoolError, match="cannot be encoded"):
            spool.append_summaries(bad, wrap)
        assert spool.append_summaries(summaries[:1], wrap) == range(54, 55)  # no seq used up


def test_small_and_large_appends_between_each_other_all_commit(spool_config: SpoolConfig) -> None:
    """Small appends (which wait for company) and large ones (which close their group early)
    alternate; every record is committed once, numbered in call order. How long each waits is
    a latency figure for bench/bench_spool.py, not for a test."""
    config = spool_config.model_copy(update={"commit_interval_ms": 50})
    with SyncSpool(config) as spool:
        spool.append(envelopes(1))
        for _ in range(3):
            spool.append(envelopes(10))
            spool.append(envelopes(1500))
        assert spool.stats().appended == 1 + 3 * 1510
        assert spool.stats().depth == 1 + 3 * 1510


def test_numpy_floats_and_other_item_types_encode_as_plain_values() -> None:
    """Items that are not Envelope instances are read by attribute; numpy floats are floats."""
    base = envelopes(1)[0]
    duck = SimpleNamespace(**{name: getattr(base, name) for name in base.__dataclass_fields__})
    numpy_stats = replace(base, stats={"mean": np.float64(1.5), "count": 3})
    rows = rows_of([base, duck, numpy_stats], 900)
    assert rows[0][1:6] == rows[1][1:6] and rows[0][0] + 1 == rows[1][0]
    assert msgpack.unpackb(rows[1][7]) == {**msgpack.unpackb(rows[0][7]), "seq": 901}
    assert typed(msgpack.unpackb(rows[2][7])["stats"]) == typed({"mean": 1.5, "count": 3})
    odd = replace(base, stats={"ok": 1.0, "\ud800": 2.0})  # cannot be UTF-8 encoded
    with pytest.raises(UnicodeEncodeError):
        rows_of([odd], 900)
