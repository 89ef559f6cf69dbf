"""Generates the config reference (docs/config-reference.md) from the models' descriptions."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge_runtime.config.models import SiteConfig
from edge_runtime.core.config import CoreConfig
from edge_runtime.pipelines.registry import PluginRegistry

__all__ = ["config_reference"]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        return f"`{field.default!r}`" if not isinstance(field.default, BaseModel) else "(table)"
    if field.default_factory is not None:
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            return "(table)"
        value = field.default_factory()  # type: ignore[call-arg]
        return "(table)" if isinstance(value, BaseModel) else f"`{value!r}`"
    return "**required**"


def _nested(annotation: Any) -> list[type[BaseModel]]:
    found = []
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append(arg)
    return found


def _section(model: type[BaseModel], prefix: str, out: list[str], seen: set[str]) -> None:
    out.append(f"\n### `{prefix}`\n")
    if model.__doc__:
        out.append(model.__doc__.strip().splitlines()[0] + "\n")
    out.append("| field | type | default | description |\n|---|---|---|---|")
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        for sub in _nested(field.annotation):
            nested.append((f"{prefix}.{name}" if prefix else name, sub))
    for path, sub in nested:
        key = f"{path}:{sub.__name__}"
        if key not in seen:
            seen.add(key)
            _section(sub, path, out, seen)


def config_reference(registry: PluginRegistry) -> str:
    out = [
        "# Site config reference",
        "",
        "Generated from the config models by `edge-runtime config-reference`; do not edit by "
        "hand. A site config is one TOML file; unknown fields are rejected.",
        "\n## Site\n",
    ]
    seen: set[str] = set()
    _section(SiteConfig, "", out, seen)
    out.append("\n## Pipeline plugins\n")
    out.append(
        "Each `[[pipelines]]` table has a `type`; the fields below are those of each plugin."
    )
    for type_name, cls in sorted(registry.types.items()):
        out.append(f"\n## Plugin `{type_name}`\n")
        if cls.__doc__:
            out.append(cls.__doc__.strip() + "\n")
        _section(cls.config_model, f"pipelines[type={type_name}]", out, seen)
    out.append("\n## Core receiver\n")
    out.append(
        "The config file of `edge-runtime core -c FILE` (one TOML file; unknown fields are "
        "rejected). The command line's options override it. Unlike a site config's, its "
        "relative paths (database, registry, http_token_file, the broker's files) are taken "
        "from the directory the core starts in, not from the config file's folder."
    )
    _section(CoreConfig, "", out, set())
    return "\n".join(out) + "\n"
