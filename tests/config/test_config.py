"""Config loading: examples are valid, errors name file, field and fix, secrets stay secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.cli.reference import config_reference
from edge_runtime.config import load_config, parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.pipelines import default_registry
from tests.support import ROOT

MINIMAL = """
site_id = "s1"
[[pipelines]]
type = "windows"
name = "p"
topics = ["a/+"]
window = { kind = "tumbling", size_s = 60 }
"""


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_are_valid(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGE_SITE_BROKER_PASSWORD", "pw")
    text = path.read_text().replace("/run/secrets/core-broker-password", str(tmp_path / "pw"))
    (tmp_path / "pw").write_text("file-secret\n")
    for name in ("site-ca.pem", "core-ca.pem", "site.crt", "site.key"):  # files a site installs
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    text = text.replace("/etc/edge-runtime/", f"{tmp_path}/")
    loaded = parse_config(text, source=str(path), base_dir=path.parent)
    assert loaded.pipelines


def test_embedded_default_is_valid() -> None:
    assert main(["check"]) == 0


def test_check_prints_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(MINIMAL)
    assert main(["check", "-c", str(cfg)]) == 0
    out = capsys.readouterr()
    assert '"site_id": "s1"' in out.out
    assert "edge_runtime_pipelines.windows.WindowPipeline" in out.out
    assert "is valid" in out.err


@pytest.mark.parametrize(
    ("mutation", "field", "hint"),
    [
        (("site_id", "sitee_id"), "sitee_id", "unknown field; did you mean 'site_id'?"),
        (("size_s = 60", "size_s = -5"), "pipelines[0].window.size_s", "greater than 0"),
        (('type = "windows"', 'type = "widnows"'), "pipelines[0]", "no such plugin type"),
        (('topics = ["a/+"]', 'topics = ["a/b+"]'), "pipelines[0].topics", "whole level"),
        (('name = "p"', 'name = "p"\ncolour = 1'), "pipelines[0].colour", "unknown field"),
    ],
)
def test_errors_name_file_field_and_fix(
    mutation: tuple[str, str], field: str, hint: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(MINIMAL.replace(*mutation, 1))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    assert str(cfg) in message
    assert field in message
    assert hint in message


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("site_id = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(cfg)


def test_missing_file(tmp_path: Path) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.toml")]) == 2


def test_secrets_resolve_but_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret_file = tmp_path / "core.pw"
    secret_file.write_text("s3cr3t-core\n")
    monkeypatch.setenv("SITE_PW", "s3cr3t-site")
    text = (
        MINIMAL
        + f"""
[site_broker]
username = "u"
password_env = "SITE_PW"
[uplink.broker]
username = "u2"
password_file = "{secret_file}"
"""
    )
    caplog.set_level(logging.DEBUG)
    loaded = parse_config(text)
    assert loaded.site.site_broker.password is not None
    assert loaded.site.site_broker.password.get_secret_value() == "s3cr3t-site"
    assert loaded.site.uplink.broker.password is not None
    assert loaded.site.uplink.broker.password.get_secret_value() == "s3cr3t-core"
    shown = repr(loaded.plan()) + repr(loaded.site) + caplog.text
    assert "s3cr3t" not in shown
    assert loaded.plan()["site"]["site_broker"]["password"] == "**********"


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('tls = { ca_file = "ca.pem" }', "uplink.broker.tls.ca_file"),
        ('tls = { cert_file = "c.crt", key_file = "k.key" }', "uplink.broker.tls.cert_file"),
        ('username = "u"\npassword_file = "pw"', "uplink.broker.password_file"),
    ],
)
def test_broker_files_that_are_missing_are_refused_at_load(
    table: str, field: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(MINIMAL + "[uplink.broker]\n" + table + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    print(message)
    assert f"[{field}]" in message
    assert str(tmp_path) in message and "does not exist" in message and "point " in message


def test_a_key_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.crt").write_text("cert")
    (tmp_path / "k.key").mkdir()
    cfg = tmp_path / "site.toml"
    cfg.write_text(MINIMAL + '[site_broker]\ntls = { cert_file = "c.crt", key_file = "k.key" }\n')
    with pytest.raises(ConfigError, match=r"\[site_broker\.tls\.key_file\] .*k\.key is not a file"):
        load_config(cfg)


def test_missing_secret_says_what_to_do() -> None:
    text = MINIMAL + '[site_broker]\nusername = "u"\npassword_env = "EDGE_NOT_SET_ANYWHERE"\n'
    with pytest.raises(ConfigError, match=r"EDGE_NOT_SET_ANYWHERE.*export it"):
        parse_config(text)


def test_config_hash_tracks_content() -> None:
    a = parse_config(MINIMAL)
    b = parse_config(MINIMAL)
    c = parse_config(MINIMAL.replace("size_s = 60", "size_s = 30"))
    assert a.config_hash == b.config_hash != c.config_hash


def test_config_reference_is_current() -> None:
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == config_reference(default_registry()), (
        "docs/config-reference.md is stale: run `edge-runtime config-reference -o "
        "docs/config-reference.md`"
    )


def test_every_config_field_is_documented() -> None:
    from edge_runtime.config.models import SiteConfig

    def walk(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"
            for sub in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub)

    walk(SiteConfig)
    for cls in default_registry().types.values():
        walk(cls.config_model)
