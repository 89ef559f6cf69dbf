"""The CPU and memory the compose files and the Kubernetes manifests give each container agree:
the same limits and requests for the same container in both forms (containers/README.md,
"Sizing the containers", derives them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

CONTAINERS = ROOT / "containers"
FORMS = [
    (CONTAINERS / "compose" / "site.yml", CONTAINERS / "k8s" / "site.yaml"),
    (CONTAINERS / "compose" / "core.yml", CONTAINERS / "k8s" / "core.yaml"),
]
MIB = 1024 * 1024
_K8S_MEMORY = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
_COMPOSE_MEMORY = {"k": 1024, "m": MIB, "g": 1024 * MIB}


def k8s_memory(value: str) -> int:
    return int(value[:-2]) * _K8S_MEMORY[value[-2:]]


def compose_memory(value: str) -> int:
    # compose (and podman's -m) count k, m and g in powers of 1024
    return int(value[:-1]) * _COMPOSE_MEMORY[value[-1].lower()]


def k8s_millicores(value: str | float) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)


def compose_services(path: Path) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))[
        "services"
    ]
    return services


def k8s_containers(path: Path) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize(("compose", "k8s"), FORMS, ids=lambda p: p.name)
def test_compose_and_kubernetes_give_each_container_the_same_resources(
    compose: Path, k8s: Path
) -> None:
    services, containers = compose_services(compose), k8s_containers(k8s)
    assert set(services) == set(containers)
    for name, service in services.items():
        resources = containers[name]["resources"]
        limits, requests = resources["limits"], resources["requests"]
        where = f"{name} in {compose.name} and {k8s.name}"
        assert round(float(service["cpus"]) * 1000) == k8s_millicores(limits["cpu"]), where
        assert compose_memory(service["mem_limit"]) == k8s_memory(limits["memory"]), where
        assert compose_memory(service["mem_reservation"]) == k8s_memory(requests["memory"]), where
        # what Kubernetes gives a container's cgroup for its CPU request (cpu.shares)
        assert service["cpu_shares"] == k8s_millicores(requests["cpu"]) * 1024 // 1000, where
        assert k8s_millicores(requests["cpu"]) <= k8s_millicores(limits["cpu"]), where
        assert k8s_memory(requests["memory"]) <= k8s_memory(limits["memory"]), where


@pytest.mark.parametrize("path", [p for form in FORMS for p in form], ids=lambda p: p.name)
def test_each_file_says_where_its_limits_come_from(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "edge-runtime size" in text
    assert "containers/sizing/measure.py" in text
