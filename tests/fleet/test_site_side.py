"""The site side's pieces without processes: the [fleet] table, a bundle's tables laid over a
local config, and the revision id every envelope carries (wire form, spool form)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from edge_runtime.config.loader import overlay_config, parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.bundle import MANAGED_KEYS, managed_hash
from edge_runtime.identity import provision
from edge_runtime.pipelines import Summary
from edge_runtime.runtime.reload import restart_only
from edge_runtime.runtime.revision import site_revision
from edge_runtime.types import Envelope
from edge_runtime.uplink import decode_envelopes, encode_envelopes
from edge_runtime.uplink.spool.records import decode_payload, encode_payload

PIPELINES = """
[[pipelines]]
type = "windows"
name = "temp"
topics = ["sensors/+/temp"]
decode = { format = "json", key = "topic:1" }
"""


def _site(identity: Path | None, fleet: bool = True) -> str:
    text = 'site_id = "s1"\n'
    if identity is not None:
        text += f'[identity]\ndir = "{identity}"\n'
    if fleet:
        text += '[fleet]\ngroup = "centre"\n'
    text += "[ingest]\nbatch_wait_ms = 5\n"
    return text + PIPELINES


def test_fleet_needs_an_identity_and_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_site(None))
    assert info.value.field == "identity"
    assert "[fleet] needs [identity]" in str(info.value)
    provision("s1", tmp_path / "registry", tmp_path / "id")
    loaded = parse_config(_site(tmp_path / "id"))
    assert loaded.site.fleet is not None
    assert loaded.site.fleet.group == "centre"
    assert loaded.site.fleet.heartbeat_interval_s == 10.0
    (tmp_path / "id" / "operator.pub").unlink()
    with pytest.raises(ConfigError) as info:
        parse_config(_site(tmp_path / "id"))
    assert info.value.field == "identity.dir"


def test_a_bundle_sets_every_managed_table_and_nothing_else(tmp_path: Path) -> None:
    provision("s1", tmp_path / "registry", tmp_path / "id")
    local = parse_config(_site(tmp_path / "id"))
    doc = {"pipelines": [{**local.raw["pipelines"][0], "name": "temp2"}]}
    merged = overlay_config(local, doc, keys=MANAGED_KEYS, source="bundle 1")
    assert [p.name for p in merged.pipelines] == ["temp2"]
    assert merged.site.ingest.batch_wait_ms != 5  # left out of the bundle: its default
    assert merged.site.fleet == local.site.fleet  # the site's own tables stay
    assert managed_hash(merged.raw) == managed_hash(doc)
    assert restart_only(local, merged) == []  # batch settings and pipelines apply live
    moved = overlay_config(
        local, {**doc, "checkpoint": {"enabled": False}}, keys=MANAGED_KEYS, source="bundle 2"
    )
    assert restart_only(local, moved) == ["checkpoint.enabled"]
    with pytest.raises(ConfigError, match="bundle 3"):
        overlay_config(local, {"pipelines": []}, keys=MANAGED_KEYS, source="bundle 3")


def test_the_revision_follows_the_config(tmp_path: Path) -> None:
    provision("s1", tmp_path / "registry", tmp_path / "id")
    local = parse_config(_site(tmp_path / "id"))
    rev = site_revision(local)
    assert rev.config_hash == local.config_hash
    assert set(rev.plugins) == {"windows"}
    assert rev.models == {}
    other = parse_config(_site(tmp_path / "id").replace('"temp"', '"temp3"'))
    assert site_revision(other).id != rev.id


def test_the_site_revision_travels_in_every_envelope_form() -> None:
    summary = Summary("p", "k", 0.0, 60.0, {"count": 3})
    plain = Envelope.wrap(summary, site="s", seq=1, created_at=1.0, version="v", config_hash="c")
    marked = Envelope.wrap(
        summary,
        site="s",
        seq=1,
        created_at=1.0,
        version="v",
        config_hash="c",
        site_revision="0123456789abcdef",
    )
    assert marked.id == plain.id  # not part of the id
    assert "site_revision" not in plain.to_dict()  # omitted while empty
    assert marked.to_dict()["site_revision"] == "0123456789abcdef"
    for env in (plain, marked):
        for encoding in ("msgpack", "json"):
            assert decode_envelopes(encode_envelopes([env], encoding)) == [env]  # type: ignore[arg-type]
        stored = encode_payload(env, 1)
        assert decode_payload(stored) == env
        assert list(msgpack.unpackb(stored))[-1] == "backlog"
    assert Envelope.from_dict(plain.to_dict()).site_revision == ""
