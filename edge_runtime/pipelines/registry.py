"""Finding, validating and instantiating pipeline plugins.

Plugins come from the ``edge_runtime.pipelines`` entry-point group (the built-in ones are
declared there by this project's pyproject) and from plugin folders named in the site config.
A plugin is validated when it is registered; a broken one fails loudly with its name.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge_runtime.errors import PluginError
from edge_runtime.pipelines.api import Pipeline, PipelineConfig

__all__ = ["ENTRY_POINT_GROUP", "PluginRegistry", "default_registry", "format_validation_error"]

ENTRY_POINT_GROUP = "edge_runtime.pipelines"
log = logging.getLogger(__name__)

PipelineClass = type[Pipeline[Any]]


def format_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: ``field.path: what is wrong (got VALUE)``. With ``model`` (the
    model that was validated), an unknown field names the closest known one."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        got = err.get("input")
        shown = "" if err["type"] == "missing" else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling against the config reference"
            if model is not None and err["loc"]:
                known = _field_names(model, err["loc"][:-1])
                close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
                if close:
                    msg = f"unknown field; did you mean '{close[0]}'?"
        else:
            msg = err["msg"]
        lines.append(f"{where}: {msg}{shown}")
    return "\n".join(lines)


def _field_names(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The field names of the model found by following ``path`` (list indices skipped)."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        current = None if field is None else _model_in(field.annotation)
    return [] if current is None else list(current.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Model``, ``Model | None`` or
    ``list[Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class PluginRegistry:
    """Maps ``type`` names to validated plugin classes."""

    def __init__(self) -> None:
        self._plugins: dict[str, PipelineClass] = {}
        self._origins: dict[str, str] = {}
        self._entry_points: dict[str, EntryPoint] = {}

    def __contains__(self, type_name: str) -> bool:
        return type_name in self._plugins or type_name in self._entry_points

    def __getitem__(self, type_name: str) -> PipelineClass:
        cls = self._plugins.get(type_name)
        if cls is not None:
            return cls
        ep = self._entry_points.get(type_name)
        if ep is not None:
            return self._load_entry_point(ep)
        known = ", ".join(sorted({*self._plugins, *self._entry_points})) or "none"
        raise PluginError(
            type_name,
            f"no such plugin type (known: {known}); install the package that provides it or "
            "add its folder to 'plugin_paths'",
        )

    @property
    def types(self) -> Mapping[str, PipelineClass]:
        """Every known plugin, importing those not imported yet (for the config reference)."""
        for name in sorted(self._entry_points):
            self[name]
        return dict(self._plugins)

    def register(self, cls: object, origin: str = "<code>") -> PipelineClass:
        """Validate ``cls`` as a pipeline plugin and register it under its ``type_name``."""
        label = getattr(cls, "__qualname__", repr(cls))
        if not inspect.isclass(cls) or not issubclass(cls, Pipeline):
            raise PluginError(label, f"from {origin} is not a subclass of edge_runtime.Pipeline")
        type_name = getattr(cls, "type_name", None)
        if not isinstance(type_name, str) or not type_name:
            raise PluginError(label, "must set the class attribute type_name = '<name>'")
        model = getattr(cls, "config_model", None)
        if not inspect.isclass(model) or not issubclass(model, PipelineConfig):
            raise PluginError(type_name, "config_model must be a subclass of PipelineConfig")
        type_field = model.model_fields["type"]
        allowed = typing.get_args(type_field.annotation)
        if typing.get_origin(type_field.annotation) is not typing.Literal or allowed != (
            type_name,
        ):
            raise PluginError(
                type_name,
                f"{model.__name__}.type must be annotated Literal[{type_name!r}] so that configs "
                "select the plugin by name",
            )
        undocumented = [
            n for n, f in model.model_fields.items() if not f.description and n != "type"
        ]
        if undocumented:
            raise PluginError(
                type_name,
                f"{model.__name__} fields {undocumented} have no description; add "
                "Field(description=...) so the config reference can document them",
            )
        if cls.input_kind == "readings" and cls.process is Pipeline.process:
            raise PluginError(type_name, "input_kind is 'readings' but process() is not defined")
        if cls.input_kind == "messages" and cls.process_messages is Pipeline.process_messages:
            raise PluginError(
                type_name, "input_kind is 'messages' but process_messages() is not defined"
            )
        if cls.input_kind == "stream" and (cls.offer is Pipeline.offer or cls.run is Pipeline.run):
            raise PluginError(type_name, "input_kind is 'stream' but offer() or run() is missing")
        existing = self._plugins.get(type_name)
        if existing is not None and existing is not cls:
            raise PluginError(
                type_name,
                f"registered twice: by {self._origins[type_name]} and by {origin}; rename one",
            )
        self._plugins[type_name] = cls
        self._origins[type_name] = origin
        return cls

    def load_entry_points(self) -> None:
        """Note the plugins of the entry-point group; each is imported (and validated) when a
        config first asks for its type, so a sensor-only site never imports the video stack."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._entry_points.setdefault(ep.name, ep)

    def _load_entry_point(self, ep: EntryPoint) -> PipelineClass:
        try:
            cls = ep.load()
        except ImportError as exc:
            raise PluginError(
                ep.name,
                f"entry point {ep.value!r} failed to import: {exc}. If a dependency is missing, "
                "install the extra that provides it (the camera plugin needs "
                "'edge-runtime[video]')",
            ) from exc
        except Exception as exc:
            raise PluginError(ep.name, f"entry point {ep.value!r} failed to import: {exc}") from exc
        registered = self.register(cls, origin=f"entry point {ep.value}")
        if registered.type_name != ep.name:
            raise PluginError(
                ep.name, f"entry point name differs from its type_name {registered.type_name!r}"
            )
        return registered

    def load_path(self, folder: Path) -> None:
        """Import each ``*.py`` module of ``folder`` and register the plugins it defines.

        Modules are imported when a site config names the folder, never at import time; an
        import error is fatal and names the file.
        """
        if not folder.is_dir():
            raise PluginError(str(folder), "plugin folder does not exist")
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"edge_runtime_plugins.{folder.name}.{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise PluginError(path.stem, f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise PluginError(path.stem, f"{path} failed to import: {exc}") from exc
            for obj in vars(module).values():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, Pipeline)
                    and obj.__module__ == module_name
                    and not inspect.isabstract(obj)
                    and "type_name" in vars(obj)
                ):
                    self.register(obj, origin=str(path))

    def validate_config(self, raw: Mapping[str, Any], where: str) -> PipelineConfig:
        """Validate one ``[[pipelines]]`` table against its plugin's config model."""
        type_name = raw.get("type")
        if not isinstance(type_name, str):
            raise PluginError(
                "?", f"{where}.type is missing; set type = one of {sorted(self._plugins)}"
            )
        cls = self[type_name]
        try:
            return cls.config_model.model_validate(dict(raw))
        except ValidationError as exc:
            raise PluginError(
                type_name,
                "invalid config:\n" + format_validation_error(exc, where, cls.config_model),
            ) from exc


def default_registry(plugin_paths: Iterable[Path] = ()) -> PluginRegistry:
    registry = PluginRegistry()
    registry.load_entry_points()
    for folder in plugin_paths:
        registry.load_path(folder)
    return registry
