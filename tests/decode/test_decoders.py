"""Decoders on real-shaped payloads: the fast path, the fallback, SenML resolution."""

from __future__ import annotations

from collections import Counter

import msgpack
import numpy as np
import orjson
import pytest

from edge_runtime.decode import DecodeSpec, ReadingDecoder
from edge_runtime.pipelines import RawMessage


def msgs(topic: str, payloads: list[bytes], received_at: float = 100.0) -> list[RawMessage]:
    return [RawMessage(topic, p, 0, False, received_at) for p in payloads]


def test_json_fast_path_keys_values_times() -> None:
    dec = ReadingDecoder(DecodeSpec(key="topic:1", time_unit="ms"))
    batch = dec.decode(
        [
            RawMessage("s/a/v", orjson.dumps({"value": 1.5, "ts": 1000}), 0, False, 0.0),
            RawMessage("s/b/v", orjson.dumps({"value": 2, "ts": 3000}), 0, False, 0.0),
            RawMessage("s/a/v", orjson.dumps({"value": None, "ts": 5000}), 0, False, 0.0),
        ],
        errors := Counter(),
    )
    assert not errors
    assert [batch.key_table.names[k] for k in batch.keys] == ["a", "b", "a"]
    np.testing.assert_array_equal(batch.times, [1.0, 3.0, 5.0])
    assert batch.values[0] == 1.5
    assert np.isnan(batch.values[2])


def test_nested_field_paths_and_receive_time() -> None:
    dec = ReadingDecoder(DecodeSpec(key="field:meta.id", value="field:data.pm25", time="received"))
    payload = orjson.dumps({"meta": {"id": "x1"}, "data": {"pm25": 7}})
    batch = dec.decode(msgs("t", [payload], received_at=42.0), Counter())
    assert batch.key_table.names == ["x1"]
    assert batch.times.tolist() == [42.0]
    assert batch.values.tolist() == [7.0]


def test_fallback_sets_bad_messages_aside_with_reasons() -> None:
    dec = ReadingDecoder(DecodeSpec())
    good = orjson.dumps({"value": 3, "ts": 1})
    payloads = [
        good,
        b"{oops",
        b"42",
        orjson.dumps({"value": "3", "ts": 1}),
        orjson.dumps({"value": True, "ts": 1}),
        orjson.dumps({"value": 1}),
        orjson.dumps({"value": 1, "ts": "yesterday"}),
        good,
    ]
    errors: Counter[str] = Counter()
    batch = dec.decode(msgs("s/k", payloads), errors)
    assert len(batch) == 2
    assert errors == {
        "malformed_json": 1,
        "not_an_object": 1,
        "wrong_type": 3,
        "missing_field": 1,
    }


def test_msgpack_and_string_numbers_are_not_numbers() -> None:
    dec = ReadingDecoder(DecodeSpec(format="msgpack"))
    errors: Counter[str] = Counter()
    batch = dec.decode(
        msgs(
            "s/k",
            [msgpack.packb({"value": 1.0, "ts": 2}), msgpack.packb({"value": "1.0", "ts": 2})],
        ),
        errors,
    )
    assert batch.values.tolist() == [1.0]
    assert errors == {"wrong_type": 1}


def test_senml_base_fields_resolve_per_rfc8428() -> None:
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "bu": "%RH", "v": 21.2},
        {"t": 10, "v": 21.3},
        {"bn": "other/", "n": "temp", "bv": 100.0, "v": 1.0, "t": 20},
        {"n": "temp", "v": None, "t": 30},
        {"n": "status", "vs": "ok"},
    ]
    errors: Counter[str] = Counter()
    batch = ReadingDecoder(DecodeSpec(format="senml", key="senml")).decode(
        msgs("gw", [orjson.dumps(pack)]), errors
    )
    names = [batch.key_table.names[k] for k in batch.keys]
    assert names == [
        "urn:dev:ow:10e2073a01080063:",
        "urn:dev:ow:10e2073a01080063:",
        "other/temp",
        "other/temp",
    ]
    np.testing.assert_allclose(
        batch.times, [1.320067464e9, 1.320067474e9, 1.320067484e9, 1.320067494e9]
    )
    assert batch.values[:3].tolist() == [21.2, 21.3, 101.0]
    assert np.isnan(batch.values[3])
    assert errors == {"non_numeric_value": 1}


def test_senml_relative_times_use_receive_time() -> None:
    batch = ReadingDecoder(DecodeSpec(format="senml", key="senml")).decode(
        msgs("gw", [orjson.dumps([{"n": "a", "v": 1, "t": -5}])], received_at=1000.0), Counter()
    )
    assert batch.times.tolist() == [995.0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[", "malformed_json"),
        (b"[]", "malformed_senml"),
        (b'{"n": "a"}', "malformed_senml"),
        (b"[1, 2]", "malformed_senml"),
        (b'[{"n": "a", "v": 1, "x_": 1}]', "unknown_field"),
        (b'[{"n": "a", "v": "1"}]', "wrong_type"),
        (b'[{"bn": 5, "n": "a", "v": 1}]', "wrong_type"),
        (b'[{"v": 1}]', "malformed_senml"),
    ],
)
def test_senml_bad_packs(payload: bytes, reason: str) -> None:
    errors: Counter[str] = Counter()
    good = orjson.dumps([{"n": "ok", "v": 1, "t": 1e9}])
    batch = ReadingDecoder(DecodeSpec(format="senml", key="senml")).decode(
        msgs("gw", [good, payload, good]), errors
    )
    assert errors == {reason: 1}
    assert len(batch) == 2


@pytest.mark.parametrize(
    ("pack", "reasons"),
    [
        ([{"bn": "x:"}], {"missing_value": 1}),
        ([{"bn": "x:", "bt": 1e9}, {"n": "a", "v": 1}], {"missing_value": 1}),
        ([{"n": "a", "v": 1, "t": 1e9}, {"n": "b", "t": 1e9}], {"missing_value": 1}),
        ([{"n": "a", "s": 5.0, "t": 1e9}], {"non_numeric_value": 1}),
    ],
)
def test_senml_records_without_a_value_are_set_aside(
    pack: list[dict[str, object]], reasons: dict[str, int]
) -> None:
    """RFC 8428 requires a value (or a sum) in every record; a record without one is not a
    missing reading stamped with the receive time: it is counted and set aside."""
    errors: Counter[str] = Counter()
    payload = orjson.dumps(pack)
    batch = ReadingDecoder(DecodeSpec(format="senml", key="senml")).decode(
        msgs("gw", [payload]), errors
    )
    assert errors == reasons
    kept = [r for r in pack if "v" in r]
    assert len(batch) == len(kept)
    assert batch.values.tolist() == [r["v"] for r in kept]
    assert (batch.times == 1e9 + 0.0).all() or not len(batch)


def _random_pack(rng: np.random.Generator) -> bytes:
    """A SenML pack of the shapes producers send, some of them awkward for the fast path."""
    n = int(rng.integers(1, 40))
    records: list[dict[str, object]] = []
    for i in range(n):
        rec: dict[str, object] = {"n": f"r{int(rng.integers(0, 6))}"}
        if rng.random() < 0.9:
            rec["v"] = float(rng.normal()) if rng.random() < 0.5 else int(rng.integers(-9, 9))
        else:
            rec["v"] = None  # a missing reading (a record with no "v" at all is set aside)
        if rng.random() < 0.6:
            rec["t"] = float(rng.random()) if rng.random() < 0.9 else -float(rng.integers(1, 5))
        if rng.random() < 0.1:
            rec["u"] = "Cel"
        if i == 0 or rng.random() < 0.03:  # base fields, mostly up front
            if rng.random() < 0.9:
                rec["bn"] = rng.choice(["dev1/", "dev}2/", 'q"x/', "", "dev3:"])
            if rng.random() < 0.8:
                rec["bt"] = 1.7e9 + float(rng.integers(0, 1000))
            if rng.random() < 0.3:
                rec["bv"] = float(rng.integers(0, 5))
        if rng.random() < 0.02:
            rec = {"n": "s", "vs": "text"}
        records.append(rec)
    option = orjson.OPT_INDENT_2 if rng.random() < 0.1 else 0
    return orjson.dumps(records, option=option)


def test_senml_fast_path_agrees_with_the_general_path() -> None:
    """The typed fast path is an optimisation only: wherever it takes a pack, it yields what the
    general path yields; the packs it declines still decode through the general path."""
    rng = np.random.default_rng(8428)
    taken = 0
    for _ in range(600):
        payload = _random_pack(rng)
        msg = RawMessage("gw/x", payload, 0, False, 500.0)
        fast_dec = ReadingDecoder(DecodeSpec(format="senml", key="senml"))
        general_dec = ReadingDecoder(DecodeSpec(format="senml", key="senml"))
        try:
            fast = fast_dec._senml_typed_pack(msg)
        except Exception as exc:  # noqa: BLE001 (compared with the general path below)
            with pytest.raises(type(exc)):
                general_dec._senml_pack(msg)
            continue
        if fast is None:
            continue
        taken += 1
        codes, values, times = general_dec._senml_pack(msg)
        assert [fast_dec.key_table.names[c] for c in fast[0]] == [
            general_dec.key_table.names[c] for c in codes
        ], payload
        np.testing.assert_array_equal(fast[1], values)
        np.testing.assert_array_equal(fast[2], times)
    assert taken > 150  # the usual shapes (a third of these packs) really take the fast path


@pytest.mark.parametrize(
    "payload",
    [
        b'[{"bn":"a}","n":"x","v":1},{"n":"y","v":2}]',  # a brace inside the first record
        b'[{"bn":"a/","n":"x","v":1} ,{"n":"y","v":2}]',  # whitespace after the first record
        b'[{"bn":"a/","n":"x","v":1},{"n":"y","v":2,"bn":"b/"}]',  # a later base name
        b'[{"bn":"a/","n":"x","v":1},{"n":"y","vs":"on"}]',  # a string value
        b'[{"bn":"a/","n":"x","v":1},{"n":"y","v":2,"q":1}]',  # a field outside RFC 8428
        b'[{"bn":"a/","n":"x","v":1},{"n":"y","v":true}]',  # a wrong type
    ],
)
def test_senml_fast_path_declines_what_it_does_not_describe(payload: bytes) -> None:
    dec = ReadingDecoder(DecodeSpec(format="senml", key="senml"))
    assert dec._senml_typed_pack(RawMessage("gw/x", payload, 0, False, 0.0)) is None
