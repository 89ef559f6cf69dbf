"""What a site runs, as a :class:`~edge_runtime.fleet.Revision`: computed at start and after
every reload from the validated config, the plugin classes that run it and the model files
its camera pipelines load."""

from __future__ import annotations

import hashlib
import inspect
import logging
from functools import cache
from importlib import metadata
from pathlib import Path

from edge_runtime import __version__
from edge_runtime.config.loader import LoadedConfig
from edge_runtime.fleet import Revision, image_info, sha256_file

__all__ = ["model_files", "model_hashes", "plugin_version", "site_revision"]

log = logging.getLogger(__name__)


@cache
def _distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def plugin_version(cls: type) -> str:
    """The version of the distribution that provides plugin class ``cls``; for a plugin loaded
    from a ``plugin_paths`` folder, ``file:`` and the first 16 hex digits of its file's
    sha256 (so that an edited plugin file is another revision)."""
    top = cls.__module__.split(".", 1)[0]
    for dist in _distributions().get(top, ()):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        source = Path(inspect.getfile(cls))
        return "file:" + hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        return "unknown"


def model_files(loaded: LoadedConfig) -> dict[str, Path]:
    """Model file name -> path, for every pipeline whose config loads a model."""
    found: dict[str, Path] = {}
    for pipeline in loaded.pipelines:
        found.update(pipeline.weight_files(loaded.base_dir))
    return found


def model_hashes(loaded: LoadedConfig) -> dict[str, str]:
    """Model file name -> sha256 (a file that cannot be read: ``missing``)."""
    hashes = {}
    for name, path in model_files(loaded).items():
        try:
            hashes[name] = _sha256_cached(path, *_stamp(path))
        except OSError as exc:
            log.warning("model file %s cannot be read for the revision: %s", path, exc.strerror)
            hashes[name] = "missing"
    return hashes


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@cache
def _sha256_cached(path: Path, mtime_ns: int, size: int) -> str:
    del mtime_ns, size  # part of the cache key: a changed file is hashed again
    return sha256_file(path)


def site_revision(loaded: LoadedConfig) -> Revision:
    """The revision of a site running ``loaded`` (reads model files: call it off the event
    loop once a site runs)."""
    plugins = {p.type: plugin_version(loaded.registry[p.type]) for p in loaded.pipelines}
    return Revision(
        runtime_version=__version__,
        config_hash=loaded.config_hash,
        plugins=plugins,
        models=model_hashes(loaded),
        image=image_info(),
    )
