"""``edge-runtime provision``: give a site its identity and register it with the core.

Run by the operator where the core's registry lives. For one site it

1. creates the site's Ed25519 key pair and puts the public key in ``<registry>/sites/``;
2. creates the registry's core and operator key pairs on first use;
3. gives the site a random core-broker password, adds it to ``<registry>/mosquitto/passwd``
   and rewrites ``<registry>/mosquitto/acl`` for every registered site (and the core
   receiver's own user, whose password it also creates on first use);
4. optionally issues the site a client certificate (CN = site id) for brokers that
   authenticate by certificate (mosquitto ``use_identity_as_username true``);
5. writes what the site needs into one directory (see :mod:`edge_runtime.identity.registry`)
   to mount as a container secret.

Private keys and passwords are written 0600 and never printed.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.errors import ConfigError
from edge_runtime.identity.keys import (
    key_id,
    load_private_key,
    write_private_key,
    write_public_key,
    write_secret,
)
from edge_runtime.identity.mosquitto_files import acl_text, set_password
from edge_runtime.identity.registry import CORE_USER, check_site_id

__all__ = ["Provisioned", "provision"]

_CORE_TOPICS = ["edge/+/summaries", "edge/+/alerts"]
_ACK_TOPIC = "edge/{site_id}/acks"
_CERT_DAYS = 825


@dataclass(frozen=True)
class Provisioned:
    site_id: str
    key_id: str
    out: Path
    broker_username: str
    acl_file: Path
    password_file: Path
    client_certificate: Path | None


def _key_pair(directory: Path, name: str) -> Ed25519PrivateKey:
    """The registry's ``name`` key pair, created on first use."""
    private = directory / f"{name}.key"
    if private.exists():
        return load_private_key(private)
    key = Ed25519PrivateKey.generate()
    write_private_key(private, key)
    write_public_key(directory / f"{name}.pub", key.public_key())
    return key


def _client_certificate(site_id: str, ca_cert: Path, ca_key: Path, out: Path) -> Path:
    try:
        issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        signing = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the client CA ({ca_cert}, {ca_key}): {exc}") from exc
    if not isinstance(signing, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{ca_key}: the client CA key must be an EC or RSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signing, hashes.SHA256())
    )
    write_secret(
        out / "client.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    path = out / "client.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def provision(
    site_id: str,
    registry: Path,
    out: Path,
    *,
    ca_file: Path | None = None,
    client_ca: tuple[Path, Path] | None = None,
    replace: bool = False,
) -> Provisioned:
    """See the module docstring; ``client_ca`` is (CA certificate, CA key) to issue a client
    certificate; ``replace`` rotates the keys of a site already registered."""
    check_site_id(site_id)
    public_path = registry / "sites" / f"{site_id}.pub"
    if public_path.exists() and not replace:
        raise ConfigError(
            f"site {site_id!r} is already registered ({public_path}); pass --replace to give "
            "it new keys and a new broker password (the old ones stop working)"
        )
    if out.exists() and any(out.iterdir()) and not replace:
        raise ConfigError(f"{out} is not empty; choose an empty --out directory")
    registry.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    core = _key_pair(registry, "core")
    operator = _key_pair(registry, "operator")
    mosquitto = registry / "mosquitto"
    passwords = mosquitto / "passwd"
    core_password = registry / "core-broker-password"
    if not core_password.exists():
        secret = secrets.token_urlsafe(32)
        write_secret(core_password, secret.encode())
        set_password(passwords, CORE_USER, secret)

    key = Ed25519PrivateKey.generate()
    write_private_key(out / "site.key", key)
    write_public_key(out / "core.pub", core.public_key())
    write_public_key(out / "operator.pub", operator.public_key())
    password = secrets.token_urlsafe(32)
    write_secret(out / "broker-password", password.encode())
    if ca_file is not None:
        try:
            (out / "ca.pem").write_bytes(ca_file.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the CA file {ca_file}: {exc.strerror}") from exc
    cert = _client_certificate(site_id, *client_ca, out) if client_ca is not None else None
    kid = key_id(key.public_key())
    (out / "identity.json").write_bytes(
        orjson.dumps(
            {"site_id": site_id, "key_id": kid, "broker_username": site_id},
            option=orjson.OPT_INDENT_2,
        )
    )
    # registered last: a site is known to the core only once its directory is complete
    set_password(passwords, site_id, password)
    write_public_key(public_path, key.public_key())
    sites = sorted(p.stem for p in (registry / "sites").glob("*.pub"))
    acl = mosquitto / "acl"
    acl.write_text(acl_text(sites, CORE_USER, _CORE_TOPICS, _ACK_TOPIC), encoding="utf-8")
    return Provisioned(site_id, kid, out, site_id, acl, passwords, cert)
