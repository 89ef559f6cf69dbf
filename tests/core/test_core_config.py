"""``edge-runtime core -c``: the core broker's password comes from its file or variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config.loader import load_model, resolve_broker
from edge_runtime.core import CoreConfig
from edge_runtime.errors import ConfigError


def write_core_config(tmp_path: Path, broker_line: str) -> Path:
    path = tmp_path / "core.toml"
    path.write_text(
        f'[broker]\nhost = "127.0.0.1"\nport = 1883\nusername = "edge-core"\n{broker_line}\n',
        encoding="utf-8",
    )
    return path


def test_password_file_is_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "core-broker-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = load_model(CoreConfig, write_core_config(tmp_path, f'password_file = "{secret}"'))
    assert config.broker.password is None  # load_model alone leaves it unresolved
    resolve_broker(config.broker, "broker", "core.toml")
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "s3cret"


def test_password_env_is_resolved(tmp_path: Path) -> None:
    config = load_model(CoreConfig, write_core_config(tmp_path, 'password_env = "CORE_PW"'))
    resolve_broker(config.broker, "broker", "core.toml", {"CORE_PW": "from-env"})
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "from-env"


def test_a_missing_password_file_names_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    config = load_model(CoreConfig, write_core_config(tmp_path, f'password_file = "{missing}"'))
    with pytest.raises(ConfigError, match="password_file"):
        resolve_broker(config.broker, "broker", "core.toml")
