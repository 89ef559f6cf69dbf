"""Brokers for the link tests: plain, with a password file, with TLS (certificates made here)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess

USER, PASSWORD = "edge", "right-password"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(name: str, cn: str, extensions: str, workdir: Path) -> tuple[Path, Path]:
    key, csr, cert = workdir / f"{name}.key", workdir / f"{name}.csr", workdir / f"{name}.pem"
    ext = workdir / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"),
        cwd=workdir,
    )
    _openssl(
        *("x509", "-req", "-in", str(csr), "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext)),
        cwd=workdir,
    )
    return cert, key


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by
    that CA (openssl, EC P-256)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    workdir = tmp_path_factory.mktemp("tls")
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"),
        *("-subj", "/CN=edge-runtime test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=workdir,
    )
    server_cert, server_key = _signed(
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        workdir,
    )
    client_cert, client_key = _signed(
        "client", "edge-client", "extendedKeyUsage=clientAuth\n", workdir
    )
    return Certificates(workdir / "ca.pem", server_cert, server_key, client_cert, client_key)


def _tls_conf(certs: Certificates, *, require_certificate: bool) -> str:
    return (
        f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
    )


@pytest.fixture
def tls_broker(certificates: Certificates) -> Iterator[MosquittoProcess]:
    """mosquitto speaking TLS only, with the test CA's server certificate."""
    with MosquittoProcess(extra_conf=_tls_conf(certificates, require_certificate=False)) as b:
        yield b


@pytest.fixture
def mtls_broker(certificates: Certificates) -> Iterator[MosquittoProcess]:
    """mosquitto that also requires a client certificate signed by the test CA."""
    with MosquittoProcess(extra_conf=_tls_conf(certificates, require_certificate=True)) as b:
        yield b


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """mosquitto that admits only USER with PASSWORD (a password file by mosquitto_passwd)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    subprocess.run([tool, "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    with MosquittoProcess(
        extra_conf=f"allow_anonymous false\npassword_file {passwords}\n"
    ) as broker:
        yield broker
