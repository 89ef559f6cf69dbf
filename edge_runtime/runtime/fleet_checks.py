"""The checks a desired bundle passes before the fleet agent applies it: pure functions.

Each check raises :class:`BundleRefused` with a short code and a detail that says what to
change; the agent (:mod:`edge_runtime.runtime.fleet_agent`) reports it as ``<code>: <detail>``.

- :func:`open_checked`: the operator's signature and the sealed form (``bad_signature``,
  ``malformed_sealed``, ``wrong_kind``, ``malformed_bundle``);
- :func:`check_serial`: a serial above every one seen, or one seen before (``stale_serial``);
- :func:`check_bundle`: the site's group, the exact runtime version, the bundle's tables laid
  over the local config and validated by the normal loader, the sha256 of every model file it
  names (``wrong_group``, ``runtime_version``, ``bad_config``, ``model_missing``,
  ``model_hash``); blocking, as it reads the model files;
- :func:`check_restart`: a change only a restart can apply (``needs_restart``).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime import __version__
from edge_runtime.config.loader import LoadedConfig, overlay_config
from edge_runtime.errors import ConfigError, DecodeError, EdgeRuntimeError
from edge_runtime.fleet import Bundle
from edge_runtime.fleet.bundle import MANAGED_KEYS, open_bundle
from edge_runtime.runtime.reload import restart_only
from edge_runtime.runtime.revision import model_hashes

__all__ = [
    "BundleRefused",
    "check_bundle",
    "check_restart",
    "check_serial",
    "open_checked",
    "overlay",
]


class BundleRefused(EdgeRuntimeError):
    """A bundle (or a local reload) was refused; ``reason`` is the short code."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


def open_checked(payload: bytes, operator: Ed25519PublicKey) -> Bundle:
    """The bundle sealed in ``payload``, verified with the operator's key."""
    try:
        return open_bundle(payload, operator)
    except DecodeError as exc:
        raise BundleRefused(exc.reason, str(exc).removeprefix(f"{exc.reason}: ")) from exc


def check_serial(serial: int, running_serial: int, last_serial: int) -> bool:
    """True for a serial not seen before, False for one seen before (the retained copy
    again after a reconnect: ignored); refuses one below the newest seen, so that an older
    signed bundle replayed cannot downgrade the site."""
    if serial in (running_serial, last_serial):
        return False
    seen = max(running_serial, last_serial)
    if serial < seen:
        raise BundleRefused(
            "stale_serial",
            f"serial {serial} is not above {seen}, the newest seen (an old bundle replayed, "
            "or a downgrade: the operator signs a new serial for a rollback)",
        )
    return True


def check_bundle(bundle: Bundle, local: LoadedConfig, group: str) -> LoadedConfig:
    """Group, runtime version, config and model files of a verified bundle; the config
    it makes with the local one. Blocking (model files)."""
    if bundle.group != group:
        raise BundleRefused(
            "wrong_group",
            f"the bundle is for group {bundle.group!r}, this site is in {group!r}",
        )
    if bundle.runtime_version != __version__:
        raise BundleRefused(
            "runtime_version",
            f"the bundle needs runtime {bundle.runtime_version}, this site runs {__version__}",
        )
    try:
        doc = bundle.document()
    except DecodeError as exc:
        raise BundleRefused("bad_config", str(exc).removeprefix("bad_config: ")) from exc
    loaded = overlay(local, bundle, doc)
    have = model_hashes(loaded)
    for name, want in sorted(bundle.models.items()):
        got = have.get(name)
        if got is None:
            raise BundleRefused(
                "model_missing", f"model {name}: no pipeline of the bundle's config loads it"
            )
        if got != want:
            raise BundleRefused(
                "model_hash",
                f"model {name}: the local file's sha256 is {got}, the bundle wants {want}",
            )
    return loaded


def overlay(local: LoadedConfig, bundle: Bundle, doc: dict[str, Any]) -> LoadedConfig:
    """The bundle's managed tables (``doc``) laid over ``local``, validated by the loader."""
    try:
        return overlay_config(
            local,
            doc,
            keys=MANAGED_KEYS,
            source=f"bundle {bundle.serial} for group {bundle.group}",
        )
    except ConfigError as exc:
        raise BundleRefused("bad_config", str(exc)) from exc


def check_restart(running: LoadedConfig, new: LoadedConfig) -> None:
    """Refuses ``new`` when it changes a field that only a restart applies."""
    fields = restart_only(running, new)
    if fields:
        raise BundleRefused(
            "needs_restart",
            f"{', '.join(fields)} change only at a restart; restart the site to apply them",
        )
