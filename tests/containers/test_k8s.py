"""The Kubernetes manifests in containers/k8s, checked against the Kubernetes schemas
(kubernetes-validate's bundled schemas: offline), and against what the images expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT

MANIFESTS = sorted((ROOT / "containers" / "k8s").glob("*.yaml"))
KUBERNETES = "1.30"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def test_there_are_manifests_for_a_site_and_a_core() -> None:
    assert {p.name for p in MANIFESTS} >= {"site.yaml", "core.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_containers_run_non_root_on_a_read_only_root_with_limits(path: Path) -> None:
    pods = [d["spec"]["template"]["spec"] for d in documents(path) if d["kind"] == "Deployment"]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}
            assert security.get("runAsUser", 1) != 0


def test_runtime_probes_use_healthz_and_readyz() -> None:
    """The probes run inside the container against 127.0.0.1 (where the ops endpoint listens
    by default; the kubelet's own HTTP probe would come from beyond loopback)."""
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] in {"runtime", "receiver"}:
                    for probe, endpoint in (
                        ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz"),
                    ):
                        command = container[probe]["exec"]["command"]
                        assert command[:2] == ["python3", "-c"]
                        assert "http://127.0.0.1:" in command[2] and f"{endpoint}'" in command[2]
