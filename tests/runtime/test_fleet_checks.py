"""A bundle's checks without a runtime: each refusal names its code and what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime import __version__
from edge_runtime.config.loader import LoadedConfig, parse_config
from edge_runtime.fleet import Bundle
from edge_runtime.fleet.revision import sha256_file
from edge_runtime.identity import Sealer, load_public_key, provision
from edge_runtime.identity.keys import load_private_key
from edge_runtime.runtime.fleet_checks import (
    BundleRefused,
    check_bundle,
    check_restart,
    check_serial,
    open_checked,
)

PIPELINE = """[[pipelines]]
type = "windows"
name = "{name}"
topics = ["sensors/+/temp"]
decode = {{ format = "json", key = "topic:1" }}
"""


@pytest.fixture
def site(tmp_path: Path) -> tuple[LoadedConfig, Path]:
    provision("s1", tmp_path / "registry", tmp_path / "id")
    text = f'site_id = "s1"\n[identity]\ndir = "{tmp_path / "id"}"\n[fleet]\ngroup = "centre"\n'
    return parse_config(text + PIPELINE.format(name="temp")), tmp_path


def _bundle(**changes: object) -> Bundle:
    fields: dict[str, object] = {
        "group": "centre",
        "serial": 7,
        "config": PIPELINE.format(name="temp2"),
        "runtime_version": __version__,
    }
    return Bundle(**{**fields, **changes})  # type: ignore[arg-type]


def _refused(reason: str) -> pytest.RaisesExc[BundleRefused]:
    return pytest.raises(BundleRefused, match=f"^{reason}: ")


def test_the_operator_signature_is_checked(site: tuple[LoadedConfig, Path]) -> None:
    _, root = site
    operator = load_public_key(root / "id" / "operator.pub")
    signed = Sealer(load_private_key(root / "registry" / "operator.key"), "operator")
    opened = open_checked(_bundle().seal(signed), operator)
    assert (opened.group, opened.serial, opened.config) == ("centre", 7, _bundle().config)
    forged = Sealer(Ed25519PrivateKey.generate(), "operator")
    with _refused("bad_signature") as info:
        open_checked(_bundle().seal(forged), operator)
    assert info.value.reason == "bad_signature"


def test_a_serial_is_new_seen_or_stale() -> None:
    assert check_serial(8, running_serial=5, last_serial=7)
    assert not check_serial(7, running_serial=5, last_serial=7)  # the retained copy again
    assert not check_serial(5, running_serial=5, last_serial=7)
    with _refused("stale_serial") as info:
        check_serial(6, running_serial=5, last_serial=7)
    assert "not above 7" in str(info.value)


def test_a_bundle_is_checked_against_the_site(site: tuple[LoadedConfig, Path]) -> None:
    local, _ = site
    loaded = check_bundle(_bundle(), local, "centre")
    assert [p.name for p in loaded.pipelines] == ["temp2"]
    check_restart(local, loaded)  # pipelines apply live
    with _refused("wrong_group"):
        check_bundle(_bundle(group="north"), local, "centre")
    with _refused("runtime_version"):
        check_bundle(_bundle(runtime_version="0.0.0"), local, "centre")
    with _refused("bad_config"):
        check_bundle(_bundle(config='site_id = "other"\n'), local, "centre")
    with _refused("bad_config"):
        check_bundle(_bundle(config="pipelines = []\n"), local, "centre")
    with _refused("model_missing"):
        check_bundle(_bundle(models={"yolo.onnx": "0" * 64}), local, "centre")
    moved = check_bundle(
        _bundle(config=PIPELINE.format(name="temp2") + "[checkpoint]\nenabled = false\n"),
        local,
        "centre",
    )
    with _refused("needs_restart") as info:
        check_restart(local, moved)
    assert "checkpoint.enabled" in str(info.value)


def test_a_model_file_with_another_hash_is_refused(site: tuple[LoadedConfig, Path]) -> None:
    """The site holds the real detector; a bundle wants other weights (those of another real
    model, the int8 export of the same detector) at that path: refused as ``model_hash``,
    naming both hashes, before anything loads. The same bundle wanting the site's file passes."""
    local, _ = site
    models = Path(__file__).resolve().parents[2] / "models" / "nanodet-m-coco"
    path = models / "nanodet_m_coco_fp32_dynbatch.onnx"
    have, other = sha256_file(path), sha256_file(models / "nanodet_m_coco_int8_qop.onnx")
    assert have != other

    def camera(sha: str) -> str:
        return f"""[[pipelines]]
type = "camera"
name = "cams"
[pipelines.model]
name = "nanodet-m-coco"
path = "{path}"
sha256 = "{sha}"
[[pipelines.cameras]]
id = "gate"
topic = "cams/gate/frames"
"""

    loaded = check_bundle(_bundle(config=camera(have), models={path.name: have}), local, "centre")
    assert [p.name for p in loaded.pipelines] == ["cams"]
    with _refused("model_hash") as info:
        check_bundle(_bundle(config=camera(other), models={path.name: other}), local, "centre")
    assert have in str(info.value) and other in str(info.value)
