"""The core's site registry (a directory the operator's ``edge-runtime provision`` fills) and
a site's identity directory (what provisioning hands to one site, mounted as a secret).

Registry layout::

    sites/<site_id>.pub     each site's Ed25519 public key (PEM)
    core.key, core.pub      the core's key pair: it signs acknowledgements to the sites
    operator.key, .pub      the operator's key pair (for signed fleet instructions)
    mosquitto/passwd        the core broker's password file (mosquitto's hashed format)
    mosquitto/acl           the core broker's ACL file
    core-broker-password    the core receiver's own broker password (user 'edge-core')

Site identity layout::

    identity.json           {"site_id", "key_id", "broker_username"}
    site.key                the site's private key (0600)
    core.pub, operator.pub  the keys the site trusts
    broker-password         the site's core-broker password (0600)
    ca.pem                  the brokers' CA (when provisioning was given one)
    client.pem, client.key  a client certificate for mTLS (when provisioning issued one)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.errors import ConfigError
from edge_runtime.identity.keys import load_private_key, load_public_key
from edge_runtime.identity.sealed import Sealer

__all__ = [
    "CORE_USER",
    "SITE_ID_PATTERN",
    "SiteIdentity",
    "SiteRegistry",
    "check_site_id",
    "load_identity",
]

SITE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CORE_USER = "edge-core"
_NEGATIVE_TTL_S = 5.0  # an unknown site is looked up on disk again after this long


def check_site_id(site_id: str) -> str:
    if not re.fullmatch(SITE_ID_PATTERN, site_id) or site_id in (CORE_USER, "fleet"):
        raise ConfigError(
            f"site id {site_id!r} must be 1-64 letters, digits, '_', '.' or '-', start with a "
            f"letter or digit, and not be {CORE_USER!r} or 'fleet' (edge/fleet/ is the fleet "
            "tree)"
        )
    return site_id


class SiteRegistry:
    """The core's view of the registry: site public keys (read on first use, a newly
    provisioned site found without a restart) and the core's signing key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        if not (directory / "core.key").is_file():
            raise ConfigError(
                f"{directory} is not a site registry (no core.key): create it with "
                "'edge-runtime provision SITE_ID --registry DIR --out DIR'"
            )
        self.sealer = Sealer(load_private_key(directory / "core.key"), "core")
        self._known: dict[str, Ed25519PublicKey] = {}
        self._unknown: dict[str, float] = {}  # site -> when last looked up in vain

    def public_key(self, site: str) -> Ed25519PublicKey | None:
        key = self._known.get(site)
        if key is not None:
            return key
        if not re.fullmatch(SITE_ID_PATTERN, site):
            return None
        now = time.monotonic()
        if now - self._unknown.get(site, -_NEGATIVE_TTL_S) < _NEGATIVE_TTL_S:
            return None
        path = self.directory / "sites" / f"{site}.pub"
        if not path.is_file():
            self._unknown[site] = now
            return None
        key = load_public_key(path)
        self._known[site] = key
        self._unknown.pop(site, None)
        return key


@dataclass(frozen=True)
class SiteIdentity:
    """What a site holds: its id, its sealer and the core's public key."""

    directory: Path
    site_id: str
    sealer: Sealer
    core_public: Ed25519PublicKey
    broker_username: str

    @classmethod
    def load(cls, directory: Path) -> SiteIdentity:
        try:
            doc = orjson.loads((directory / "identity.json").read_bytes())
            site_id, username = str(doc["site_id"]), str(doc["broker_username"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{directory} is not a site identity directory (identity.json unreadable: "
                f"{exc}); make one with 'edge-runtime provision'"
            ) from exc
        key = load_private_key(directory / "site.key")
        return cls(
            directory,
            site_id,
            Sealer(key, site_id),
            load_public_key(directory / "core.pub"),
            username,
        )


def load_identity(directory: Path, site_id: str) -> SiteIdentity:
    """The identity in ``directory``; :class:`ConfigError` unless it is ``site_id``'s."""
    identity = SiteIdentity.load(directory)
    if identity.site_id != site_id:
        raise ConfigError(
            f"the identity in {directory} is site {identity.site_id!r}, not {site_id!r}: mount "
            "this site's own identity directory",
            field="identity.dir",
        )
    return identity
