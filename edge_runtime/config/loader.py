"""Loading a site config: TOML → pydantic → plugins, with errors that name file and field."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from edge_runtime.config.models import BrokerConfig, SiteConfig
from edge_runtime.errors import ConfigError, PluginError
from edge_runtime.identity import load_identity
from edge_runtime.pipelines.api import PipelineConfig
from edge_runtime.pipelines.registry import (
    PluginRegistry,
    default_registry,
    format_validation_error,
)

__all__ = [
    "LoadedConfig",
    "load_config",
    "load_model",
    "overlay_config",
    "parse_config",
    "parse_document",
    "resolve_broker",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated site config with its pipelines resolved against the plugin registry."""

    site: SiteConfig
    pipelines: tuple[PipelineConfig, ...]
    registry: PluginRegistry
    source: str
    base_dir: Path
    config_hash: str
    raw: Mapping[str, Any] = dataclass_field(default_factory=dict)
    """The parsed TOML document, before validation (fleet bundles lay tables over it)."""

    def plan(self) -> dict[str, Any]:
        """The resolved plan as plain data (secrets masked), as ``edge-runtime check`` prints it."""
        site = self.site.model_dump(mode="json", exclude={"pipelines"})
        for role in ("site_broker",):
            _mask(site[role], getattr(self.site, role))
        _mask(site["uplink"]["broker"], self.site.uplink.broker)
        return {
            "source": self.source,
            "config_hash": self.config_hash,
            "site": site,
            "pipelines": [
                {
                    "plugin": _qualified(self.registry[p.type]),
                    **p.model_dump(mode="json"),
                }
                for p in self.pipelines
            ],
        }


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _mask(dumped: dict[str, Any], broker: BrokerConfig) -> None:
    dumped["password"] = "**********" if broker.password is not None else None


def load_config(
    path: str | os.PathLike[str], registry: PluginRegistry | None = None
) -> LoadedConfig:
    """Read and validate the TOML file at ``path``; raise :class:`ConfigError` on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=source) from exc
    return parse_config(
        text, source=source, base_dir=Path(path).resolve().parent, registry=registry
    )


def load_model(model: type[M], path: str | os.PathLike[str]) -> M:
    """Load a TOML file into any config model, with the same error style as site configs."""
    source = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=source) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            "invalid configuration:\n" + format_validation_error(exc, model=model), source=source
        ) from exc


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: Path | None = None,
    registry: PluginRegistry | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from exc
    return parse_document(raw, source=source, base_dir=base_dir, registry=registry, environ=environ)


def overlay_config(
    loaded: LoadedConfig, tables: Mapping[str, Any], *, keys: tuple[str, ...], source: str
) -> LoadedConfig:
    """``loaded``'s document with its ``keys`` replaced by ``tables`` (a key of ``keys`` that
    ``tables`` lacks is dropped: it gets its defaults), validated like a file; the plugin
    registry is ``loaded``'s. Raises :class:`ConfigError` naming ``source``."""
    doc = {k: v for k, v in loaded.raw.items() if k not in keys}
    doc.update({k: v for k, v in tables.items() if k in keys})
    return parse_document(doc, source=source, base_dir=loaded.base_dir, registry=loaded.registry)


def parse_document(
    raw: Mapping[str, Any],
    *,
    source: str = "<string>",
    base_dir: Path | None = None,
    registry: PluginRegistry | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Validate a parsed TOML document (what :func:`parse_config` does after parsing)."""
    base = base_dir or Path.cwd()
    try:
        site = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            "invalid configuration:\n" + format_validation_error(exc, model=SiteConfig),
            source=source,
        ) from exc
    site = _resolve_paths(site, base)
    env = os.environ if environ is None else environ
    for field, broker in (("site_broker", site.site_broker), ("uplink.broker", site.uplink.broker)):
        for name, problem in broker.file_problems():
            raise ConfigError(problem, source=source, field=f"{field}.{name}")
        _resolve_secret(broker, field, source, env)
    if site.ops.http_enabled:
        try:
            site.ops.token()
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source, field="ops.http_token_env") from exc
    if site.identity is not None:  # a missing or wrong identity is refused here, not at start
        try:
            load_identity(site.identity.dir, site.site_id)
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source, field="identity.dir") from exc
        if site.fleet is not None and not (site.identity.dir / "operator.pub").is_file():
            raise ConfigError(
                f"{site.identity.dir} has no operator.pub: [fleet] verifies bundles with it; "
                "provision the site again with a current 'edge-runtime provision'",
                source=source,
                field="identity.dir",
            )
    elif site.fleet is not None:
        raise ConfigError(
            "[fleet] needs [identity]: bundles are verified with the operator key and "
            "heartbeats signed with the site key of the identity directory; add [identity] "
            "dir = ... (see 'edge-runtime provision') or remove [fleet]",
            source=source,
            field="identity",
        )
    if registry is None:
        try:
            registry = default_registry(site.plugin_paths)
        except PluginError as exc:
            raise ConfigError(str(exc), source=source, field="plugin_paths") from exc
    pipelines = []
    for i, table in enumerate(site.pipelines):
        where = f"pipelines[{i}]"
        try:
            pipelines.append(registry.validate_config(table, where))
        except PluginError as exc:
            raise ConfigError(str(exc), source=source, field=where) from exc
    digest = hashlib.sha256(
        orjson.dumps(
            {
                "site": site.model_dump(mode="json"),
                "pipelines": [p.model_dump(mode="json") for p in pipelines],
            },
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:16]
    return LoadedConfig(
        site=site,
        pipelines=tuple(pipelines),
        registry=registry,
        source=source,
        base_dir=base,
        config_hash=digest,
        raw=dict(raw),
    )


def _resolve_paths(site: SiteConfig, base: Path) -> SiteConfig:
    def rel(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    def broker(b: BrokerConfig) -> BrokerConfig:
        tls = b.tls
        if tls is not None:
            tls = tls.model_copy(
                update={
                    k: rel(v)
                    for k, v in (
                        ("ca_file", tls.ca_file),
                        ("cert_file", tls.cert_file),
                        ("key_file", tls.key_file),
                    )
                    if v is not None
                }
            )
        pw = rel(b.password_file) if b.password_file is not None else None
        return b.model_copy(update={"tls": tls, "password_file": pw})

    return site.model_copy(
        update={
            "data_dir": rel(site.data_dir),
            "plugin_paths": [rel(p) for p in site.plugin_paths],
            "site_broker": broker(site.site_broker),
            "uplink": site.uplink.model_copy(update={"broker": broker(site.uplink.broker)}),
            "ops": site.ops.model_copy(
                update={
                    "http_token_file": rel(site.ops.http_token_file)
                    if site.ops.http_token_file is not None
                    else None
                }
            ),
            "identity": (
                site.identity.model_copy(update={"dir": rel(site.identity.dir)})
                if site.identity is not None
                else None
            ),
        }
    )


def resolve_broker(
    broker: BrokerConfig, field: str, source: str, environ: Mapping[str, str] | None = None
) -> None:
    """Check the files ``broker`` names and resolve its password (``password_env`` or
    ``password_file``), as site configs are; for configs loaded with :func:`load_model`,
    such as the core's."""
    for name, problem in broker.file_problems():
        raise ConfigError(problem, source=source, field=f"{field}.{name}")
    _resolve_secret(broker, field, source, os.environ if environ is None else environ)


def _resolve_secret(broker: BrokerConfig, field: str, source: str, env: Mapping[str, str]) -> None:
    secret: str | None = None
    if broker.password_env is not None:
        secret = env.get(broker.password_env)
        if secret is None:
            raise ConfigError(
                f"environment variable {broker.password_env!r} is not set; export it with the "
                "broker password",
                source=source,
                field=f"{field}.password_env",
            )
    elif broker.password_file is not None:
        try:
            secret = broker.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {broker.password_file}: {exc.strerror}",
                source=source,
                field=f"{field}.password_file",
            ) from exc
    if secret is not None:
        broker._password = SecretStr(secret)
