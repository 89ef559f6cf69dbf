"""``edge-runtime fleet``: the bundle history under the registry, what a rollback goes back
to, and the mistakes refused before anything is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.cli.fleet import Kept, history, keep, next_serial, rollback_target
from edge_runtime.cli.main import main
from edge_runtime.errors import ConfigError
from edge_runtime.identity import provision


def test_rollback_goes_back_one_published_bundle_at_a_time(tmp_path: Path) -> None:
    for serial, content_of, kind in ((10, 10, "publish"), (20, 20, "publish"), (30, 30, "publish")):
        keep(tmp_path, "g", Kept(serial, b"x%d" % serial, content_of, kind))
    kept = history(tmp_path, "g")
    assert [k.serial for k in kept] == [10, 20, 30]
    assert rollback_target(kept, None).serial == 20
    keep(tmp_path, "g", Kept(31, b"r", 20, "rollback"))  # rolled back to 20's content
    assert rollback_target(history(tmp_path, "g"), None).serial == 10  # and once more
    assert rollback_target(kept, 30).serial == 30
    with pytest.raises(ConfigError, match="no bundle 99"):
        rollback_target(kept, 99)
    with pytest.raises(ConfigError, match="nothing before it"):
        rollback_target(kept[:1], None)
    with pytest.raises(ConfigError, match="nothing was published"):
        rollback_target([], None)
    assert next_serial(kept) > 30
    assert next_serial([Kept(10**18, b"", 0, "publish")]) == 10**18 + 1  # a clock set back


def test_publish_refuses_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    provision("s1", registry, tmp_path / "id")
    bad = tmp_path / "bad.toml"
    bad.write_text('site_id = "x"\n[[pipelines]]\ntype = "windows"\n')
    base = ["fleet", "publish", "--group", "g", "--registry", str(registry)]
    base += ["--broker", "127.0.0.1:9"]  # nothing listens: never reached
    assert main([*base, "--config", str(bad)]) == 2
    assert "a bundle may set only pipelines, ingest, checkpoint; it sets site_id" in (
        capsys.readouterr().err
    )
    good = tmp_path / "good.toml"
    good.write_text("[ingest]\nbatch_wait_ms = 5\n")
    assert main([*base, "--config", str(good), "--model", "det.onnx=abc"]) == 2
    assert "NAME=SHA256" in capsys.readouterr().err
    assert not (registry / "fleet").exists()
    assert main(["fleet", "rollback", "--group", "g", "--registry", str(registry)]) == 2
    assert "nothing was published" in capsys.readouterr().err
