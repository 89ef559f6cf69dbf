"""The fleet messages: revisions, signed bundles and heartbeats, and what each refuses."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.errors import DecodeError
from edge_runtime.fleet import Bundle, Heartbeat, Revision, image_info, open_bundle, open_heartbeat
from edge_runtime.fleet.bundle import RollbackRequest, managed_hash, open_fleet_message
from edge_runtime.identity import Sealer

CONFIG = """
[[pipelines]]
type = "windows"
name = "temp"
topics = ["sensors/+/temp"]
window_s = 10
"""


def _revision(**kw: object) -> Revision:
    base: dict[str, object] = {
        "runtime_version": "0.1.0",
        "config_hash": "abc",
        "plugins": {"windows": "0.1.0"},
        "models": {"det.onnx": "00" * 32},
    }
    base.update(kw)
    return Revision(**base)  # type: ignore[arg-type]


def test_revision_id_is_stable_and_covers_every_part() -> None:
    rev = _revision()
    assert rev.id == _revision().id and len(rev.id) == 16
    assert Revision.from_dict(rev.to_dict()) == rev
    changed = [
        _revision(runtime_version="0.1.1"),
        _revision(config_hash="abd"),
        _revision(plugins={"windows": "0.2.0"}),
        _revision(models={"det.onnx": "11" * 32}),
        _revision(image={"digest": "sha256:1"}),
    ]
    assert len({rev.id, *(r.id for r in changed)}) == 6


def test_revision_from_garbage_is_refused() -> None:
    for doc in (None, [], {"runtime_version": 1, "config_hash": "x"}, {"config_hash": "x"}):
        with pytest.raises(DecodeError) as info:
            Revision.from_dict(doc)
        assert info.value.reason == "malformed_revision"


def test_image_info_reads_the_image_record(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    path.write_text('{"image": "site", "version": "0.1.0", "digest": "sha256:ab"}')
    assert image_info(path) == {
        "image": "site",
        "version": "0.1.0",
        "digest": "sha256:ab",
    }
    assert image_info(tmp_path / "none.json") is None
    path.write_text("[1, 2]")
    assert image_info(path) is None


def test_bundle_round_trip_and_managed_hash() -> None:
    operator = Ed25519PrivateKey.generate()
    bundle = Bundle("north", 17, CONFIG, "0.1.0", {"det.onnx": "00" * 32}, 20.0, 1.5)
    opened = open_bundle(bundle.seal(Sealer(operator, "operator")), operator.public_key())
    assert opened == bundle
    assert opened.managed_hash == managed_hash({"pipelines": opened.document()["pipelines"]})


def test_bundle_signed_by_another_key_is_refused() -> None:
    operator, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sealed = Bundle("north", 1, CONFIG, "0.1.0").seal(Sealer(forger, "operator"))
    with pytest.raises(DecodeError) as info:
        open_bundle(sealed, operator.public_key())
    assert info.value.reason == "bad_signature"


def test_bundle_with_a_site_local_key_or_bad_toml_is_refused_on_read() -> None:
    with pytest.raises(DecodeError, match="may set only") as info:
        Bundle("north", 1, 'site_id = "other"\n' + CONFIG, "0.1.0").document()
    assert info.value.reason == "bad_config"
    with pytest.raises(DecodeError, match="not TOML"):
        Bundle("north", 1, "[[pipelines]\n", "0.1.0").document()


def test_malformed_bundle_payload_is_refused() -> None:
    operator = Ed25519PrivateKey.generate()
    sealer = Sealer(operator, "operator")
    bad = sealer.seal("fleet", msgpack.packb({"type": "bundle", "group": 3}))
    with pytest.raises(DecodeError) as info:
        open_bundle(bad, operator.public_key())
    assert info.value.reason == "malformed_bundle"
    rollback = RollbackRequest("north", 9).seal(sealer)
    assert open_fleet_message(rollback, operator.public_key()) == RollbackRequest("north", 9)
    with pytest.raises(DecodeError):
        open_bundle(rollback, operator.public_key())
    # a heartbeat's envelope is not an operator message
    with pytest.raises(DecodeError) as info:
        open_bundle(sealer.seal("heartbeat", b"\x80"), operator.public_key())
    assert info.value.reason == "wrong_kind"


def test_heartbeat_round_trip_and_refusals() -> None:
    site_key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    beat = Heartbeat("s1", "north", _revision(), "h", 17, 17, "applied", "", (), True, 3)
    sealed = beat.seal(Sealer(site_key, "s1"))
    opened = open_heartbeat(sealed, {"s1": site_key.public_key()}.get)
    assert opened.revision_id == beat.revision_id
    assert (opened.site, opened.last_outcome, opened.backlog, opened.ready) == (
        "s1",
        "applied",
        3,
        True,
    )
    assert opened.ts > 0
    for lookup, reason in (
        ({}.get, "unknown_site"),
        ({"s1": other.public_key()}.get, "bad_signature"),
    ):
        with pytest.raises(DecodeError) as info:
            open_heartbeat(sealed, lookup)
        assert info.value.reason == reason
    # signed by s2 but claiming to be s1
    forged = beat.seal(Sealer(other, "s2"))
    with pytest.raises(DecodeError) as info:
        open_heartbeat(forged, {"s2": other.public_key()}.get)
    assert info.value.reason == "wrong_site"
