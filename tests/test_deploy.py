"""The Kubernetes manifests (issue 17): valid against the API's schemas (kubernetes-validate,
strict), laid out as docs/DEPLOY.md says, and their start-up scripts name each pod's
position and peers right (run with sh, `python` replaced by `echo`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "k8s" / "sixfold.yaml"
K8S_VERSION = "1.30.0"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def _by(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _docs() if d["kind"] == kind}


def test_every_resource_is_valid_against_the_api_schemas() -> None:
    docs = _docs()
    assert len(docs) == 13
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = _by("StatefulSet")["sixfold-az-a"]
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_each_az_is_a_statefulset_pinned_to_its_zone_with_a_budget_of_one() -> None:
    sets, budgets = _by("StatefulSet"), _by("PodDisruptionBudget")
    for az in "abc":
        spec = sets[f"sixfold-az-{az}"]["spec"]
        assert (
            spec["replicas"] == 2 and spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        )
        pod = spec["template"]["spec"]
        (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert term["matchExpressions"][0]["key"] == "topology.kubernetes.io/zone"
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        (container,) = pod["containers"]
        assert container["readinessProbe"]["exec"]["command"][-2:] == [
            "sixfold.healthcheck",
            "7000",
        ]
        assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in container["volumeMounts"]
        assert budgets[f"sixfold-az-{az}"]["spec"]["maxUnavailable"] == 1
        assert _by("Service")[f"sixfold-az-{az}"]["spec"]["clusterIP"] == "None"
    settings = _by("ConfigMap")["sixfold"]["data"]
    assert settings["SIXFOLD_TLS_DIR"] == "/tls" and settings["SIXFOLD_AUTH_FILE"].startswith(
        "/tls/"
    )


def _started(kind_name: str, hostname: str) -> str:
    """What the pod's start-up script runs, `python` echoed instead of run."""
    (container,) = _by("StatefulSet")[kind_name]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].replace("exec python", "exec echo python")
    nodes = _by("ConfigMap")["sixfold"]["data"]["NODES"]
    ran = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
        env={
            "HOSTNAME": hostname,
            "NODES": nodes,
            "SIXFOLD_LOG_LEVEL": "INFO",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_pods_take_their_positions_and_peers_from_their_names() -> None:
    b2 = _started("sixfold-az-b", "sixfold-az-b-1")
    assert "--name b2 " in b2
    peers = b2.split("--peers ", 1)[1].split()[0].split(",")
    assert [p.split("=")[0] for p in peers] == ["a1", "a2", "b1", "c1", "c2"]
    assert "a1=sixfold-az-a-0.sixfold-az-a:7000" in peers
    assert "python -m writer " in _started("sixfold-instances", "sixfold-instances-0")
    r2 = _started("sixfold-instances", "sixfold-instances-2")
    assert "python -m reader --name r2 " in r2 and "--promotion-rank 1 " in r2
