"""Drift causes at the core, from a desired bundle and a heartbeat."""

from __future__ import annotations

from edge_runtime.core.drift import Cause, Target, site_drift
from edge_runtime.fleet import Bundle, Heartbeat, Revision

CONFIG = '[[pipelines]]\ntype = "windows"\nname = "t"\ntopics = ["a/+"]\n'
BUNDLE = Bundle("g", 7, CONFIG, "0.1.0", {"det.onnx": "ab" * 32})
TARGET = Target.of(BUNDLE)


def beat(**kw: object) -> Heartbeat:
    args: dict[str, object] = {
        "site": "s",
        "group": "g",
        "revision": Revision("0.1.0", "c", models={"det.onnx": "ab" * 32}),
        "managed_hash": BUNDLE.managed_hash,
        "running_serial": 7,
        "last_serial": 7,
        "last_outcome": "applied",
    }
    args.update(kw)
    return Heartbeat(**args)  # type: ignore[arg-type]


def codes(**kw: object) -> list[str]:
    b = kw.pop("beat", beat())
    d = site_drift(b, TARGET, age_s=1.0, stale_after_s=30.0, **kw)  # type: ignore[arg-type]
    return [c.code for c in d.causes]


def test_in_sync_unmanaged_and_never_heard() -> None:
    assert site_drift(beat(), TARGET, age_s=1.0, stale_after_s=30).state == "in_sync"
    assert site_drift(beat(), None, age_s=1.0, stale_after_s=30).state == "unmanaged"
    assert site_drift(None, TARGET, age_s=None, stale_after_s=30).state == "never_heard"


def test_each_cause() -> None:
    assert codes(beat=beat(running_serial=5, last_outcome="refused")) == ["refused"]
    assert codes(beat=beat(running_serial=5, last_outcome="rolled_back")) == ["rolled_back"]
    assert codes(beat=beat(running_serial=5, last_serial=5)) == ["not_applied"]
    assert codes(beat=beat(running_serial=9, last_serial=9)) == ["serial"]
    assert codes(beat=beat(managed_hash="x")) == ["config_hash"]
    assert codes(beat=beat(revision=Revision("0.2.0", "c", models={"det.onnx": "ab" * 32}))) == [
        "runtime_version"
    ]
    assert codes(beat=beat(revision=Revision("0.1.0", "c"))) == ["model_hash"]
    assert codes(beat=beat(drift=("local config changed (SIGHUP)",))) == ["site_reported"]
    assert codes(beat=beat(group="h")) == ["group"]
    stale = site_drift(beat(), TARGET, age_s=99.0, stale_after_s=30.0)
    assert stale.state == "stale" and stale.causes[0].text == "heartbeat stale for 99 s"


def test_pending_is_not_drift_yet() -> None:
    d = site_drift(beat(), TARGET, age_s=1.0, stale_after_s=30, pending=Cause("pending_wave", "w"))
    assert d.state == "pending" and d.as_dict()["drift"] is True
    d = site_drift(beat(running_serial=5, last_serial=5), TARGET, age_s=1.0, stale_after_s=30)
    assert d.state == "pending"
