"""The core broker's entry points as provisioning sets them up, against a real mosquitto with
TLS: per-site passwords and the generated ACL, then client certificates (mTLS, the CN is the
user name). A site's credentials cannot publish under another site's topics, nor read
another site's acknowledgements: the messages never reach a subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import aiomqtt

from edge_runtime.broker import MosquittoProcess
from edge_runtime.identity import CORE_USER, provision
from tests.delivery.harness import figures
from tests.mqtt.conftest import Certificates, _signed


def _tls(certs: Certificates, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def _exchange(
    port: int, core: dict[str, object], site_a: dict[str, object]
) -> tuple[list[str], list[str]]:
    """The core subscribes to every site's summaries; site-a publishes under its own topic and
    under site-b's, and listens on site-b's acks while the core acknowledges both sites."""
    got_core: list[str] = []
    got_site: list[str] = []
    async with (
        aiomqtt.Client("127.0.0.1", port, identifier="core", **core) as c,  # type: ignore[arg-type]
        aiomqtt.Client("127.0.0.1", port, identifier="site-a", **site_a) as a,  # type: ignore[arg-type]
    ):
        await c.subscribe("edge/+/summaries", qos=1)
        await a.subscribe("edge/site-a/acks", qos=1)
        await a.subscribe("edge/site-b/acks", qos=1)

        async def collect(client: aiomqtt.Client, into: list[str]) -> None:
            async for message in client.messages:
                into.append(str(message.topic))

        tasks = [
            asyncio.create_task(collect(c, got_core)),
            asyncio.create_task(collect(a, got_site)),
        ]
        try:
            await a.publish("edge/site-b/summaries", b"forged", qos=1)
            await a.publish("edge/site-a/summaries", b"genuine", qos=1)
            await c.publish("edge/site-b/acks", b"ack-b", qos=1)
            await c.publish("edge/site-a/acks", b"ack-a", qos=1)
            async with asyncio.timeout(10):
                while not (got_core and got_site):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # anything forged would have arrived by now
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
    return got_core, got_site


async def test_site_password_cannot_publish_for_another_site(
    certificates: Certificates, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    for site in ("site-a", "site-b"):
        provision(site, registry, tmp_path / site, ca_file=certificates.ca)
    conf = (
        "allow_anonymous false\n"
        f"password_file {registry / 'mosquitto' / 'passwd'}\n"
        f"acl_file {registry / 'mosquitto' / 'acl'}\n"
        f"cafile {certificates.ca}\ncertfile {certificates.server_cert}\n"
        f"keyfile {certificates.server_key}\n"
    )
    core_pw = (registry / "core-broker-password").read_text()
    site_pw = (tmp_path / "site-a" / "broker-password").read_text()
    with MosquittoProcess(extra_conf=conf, workdir=tmp_path / "broker") as broker:
        got_core, got_site = await _exchange(
            broker.port,
            {"username": CORE_USER, "password": core_pw, "tls_context": _tls(certificates)},
            {"username": "site-a", "password": site_pw, "tls_context": _tls(certificates)},
        )
    figures("passwords + ACL over TLS", core_received=got_core, site_a_received=got_site)
    assert got_core == ["edge/site-a/summaries"]
    assert got_site == ["edge/site-a/acks"]


async def test_site_certificate_cannot_publish_for_another_site(
    certificates: Certificates, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    ca = (certificates.ca, certificates.ca.parent / "ca.key")
    for site in ("site-a", "site-b"):
        provision(site, registry, tmp_path / site, ca_file=certificates.ca, client_ca=ca)
    core_cert, core_key = _signed(
        "edge-core", CORE_USER, "extendedKeyUsage=clientAuth\n", certificates.ca.parent
    )
    conf = (
        "allow_anonymous false\nrequire_certificate true\nuse_identity_as_username true\n"
        f"acl_file {registry / 'mosquitto' / 'acl'}\n"
        f"cafile {certificates.ca}\ncertfile {certificates.server_cert}\n"
        f"keyfile {certificates.server_key}\n"
    )
    site_dir = tmp_path / "site-a"
    with MosquittoProcess(extra_conf=conf, workdir=tmp_path / "broker") as broker:
        got_core, got_site = await _exchange(
            broker.port,
            {"tls_context": _tls(certificates, core_cert, core_key)},
            {"tls_context": _tls(certificates, site_dir / "client.pem", site_dir / "client.key")},
        )
    figures("client certificates (mTLS) + ACL", core_received=got_core, site_a_received=got_site)
    assert got_core == ["edge/site-a/summaries"]
    assert got_site == ["edge/site-a/acks"]
