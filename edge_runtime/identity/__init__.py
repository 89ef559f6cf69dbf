"""Site identity: keys, the core's site registry, signed (sealed) messages, provisioning.

A site signs every uplink message with its Ed25519 key; the core verifies it against the
registry before storing or acknowledging anything, and signs its acknowledgements with the
core key whose public half the site received at provisioning. See :mod:`.sealed` for the
wire format and :mod:`.provision` for what the operator runs.
"""

from edge_runtime.identity.config import IdentityConfig
from edge_runtime.identity.keys import key_id, load_private_key, load_public_key
from edge_runtime.identity.provision import Provisioned, provision
from edge_runtime.identity.registry import (
    CORE_USER,
    SITE_ID_PATTERN,
    SiteIdentity,
    SiteRegistry,
    check_site_id,
    load_identity,
)
from edge_runtime.identity.sealed import Kind, Sealed, Sealer, is_sealed, open_sealed

__all__ = [
    "CORE_USER",
    "SITE_ID_PATTERN",
    "IdentityConfig",
    "Kind",
    "Provisioned",
    "Sealed",
    "Sealer",
    "SiteIdentity",
    "SiteRegistry",
    "check_site_id",
    "is_sealed",
    "key_id",
    "load_identity",
    "load_private_key",
    "load_public_key",
    "open_sealed",
    "provision",
]
