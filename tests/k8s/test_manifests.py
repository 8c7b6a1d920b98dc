"""deploy/k8s and the Dockerfile, checked offline: both overlays render, pass
kubernetes-validate --strict (Kubernetes 1.29 and the newest schema it ships) and checkov
(every skipped check justified), the Dockerfile passes hadolint, and the pieces agree with
each other and with how dawait serve stops (probes, ports, grace periods, tokens)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.k8s.manifests import (
    DOCKERFILE,
    OVERLAYS,
    REPO,
    Manifest,
    find,
    generated,
    image_entrypoint,
    render,
)

CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
BIN = Path(sys.executable).parent
OLDEST_K8S = "1.29.0"


def newest_k8s() -> str:
    """The newest Kubernetes version whose schemas kubernetes-validate ships."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [
        tuple(int(n) for n in m.group(1).split("."))
        for d in schemas.iterdir()
        if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local", d.name))
    ]
    return ".".join(str(n) for n in max(versions))


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    overlay: str = request.param
    path = tmp_path_factory.mktemp("k8s") / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(render(overlay)))
    return path


def test_both_overlays_render_everything_a_deployment_needs() -> None:
    for overlay in OVERLAYS:
        manifests = render(overlay)
        kinds = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
        for expected in (
            "StatefulSet/dawait-etcd",
            "Service/dawait-etcd-peers",
            "Service/dawait-etcd",
            "Deployment/dawait-node",
            "Service/dawait",
            "PodDisruptionBudget/dawait-node",
            "PodDisruptionBudget/dawait-etcd",
            "HorizontalPodAutoscaler/dawait-node",
            "NetworkPolicy/dawait-etcd",
            "NetworkPolicy/dawait-node",
        ):
            assert expected in kinds, f"{overlay} renders no {expected}: {kinds}"
        generated(manifests, "ConfigMap", "dawait-node")
        namespace = find(manifests, "Namespace")["metadata"]["name"]
        assert all(
            m["metadata"].get("namespace") == namespace
            for m in manifests
            if m["kind"] != "Namespace"
        ), f"{overlay}: every object lives in its namespace"


def test_dev_runs_one_member_and_one_node_and_prod_three_of_each() -> None:
    for overlay, size in (("dev", 1), ("prod", 3)):
        manifests = render(overlay)
        etcd = find(manifests, "StatefulSet", "dawait-etcd")
        assert etcd["spec"]["replicas"] == size
        env = {
            e["name"]: e.get("value")
            for e in etcd["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        members = env["ETCD_INITIAL_CLUSTER"].split(",")
        assert [m.split("=")[0] for m in members] == [f"dawait-etcd-{k}" for k in range(size)]
        hpa = find(manifests, "HorizontalPodAutoscaler", "dawait-node")
        assert hpa["spec"]["minReplicas"] == size
        assert "replicas" not in find(manifests, "Deployment", "dawait-node")["spec"], (
            "the HPA owns the node count"
        )
    prod_etcd = find(render("prod"), "StatefulSet", "dawait-etcd")["spec"]["template"]["spec"]
    anti = prod_etcd["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname", "prod: one member per machine"


@pytest.mark.parametrize("version", [OLDEST_K8S, "newest"])
def test_kubernetes_validate_strict_passes(rendered: Path, version: str) -> None:
    version = newest_k8s() if version == "newest" else version
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{rendered.name} against {version}:\n{done.stdout}{done.stderr}"


def test_checkov_passes_with_every_skip_justified(rendered: Path) -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: ./scripts/check.sh installs it", pytrace=False)
    done = subprocess.run(
        # --skip-download: checkov would otherwise call its vendor's API
        [str(CHECKOV), "--framework", "kubernetes", "-f", str(rendered), "--skip-download",
         "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, f"checkov fails {rendered.name}: {failed}"
    assert report["summary"]["passed"] > 100, report["summary"]
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']}: no justification"


def _node(manifests: list[Manifest]) -> tuple[Manifest, Manifest, dict[str, str]]:
    """The node Deployment's pod template, its container, and its ConfigMap's data."""
    template = find(manifests, "Deployment", "dawait-node")["spec"]["template"]
    config = generated(manifests, "ConfigMap", "dawait-node")["data"]
    return template, template["spec"]["containers"][0], config


def test_the_dockerfile_passes_hadolint_and_builds_what_the_deployment_runs() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"
    text = DOCKERFILE.read_text()
    final = text.split("\nFROM ")[-1]
    assert text.count("\nFROM ") >= 2, "multi-stage"
    assert final.startswith("python:3.11-slim"), "slim Python 3.11 base"
    assert re.search(r"^USER 10001", final, re.M), "runs as a non-root user"
    assert re.search(r"^STOPSIGNAL SIGTERM$", final, re.M), "SIGTERM is dawait's graceful stop"
    assert not re.search(r"apt-get|gcc|build-essential", final), "no build tools in the final stage"
    for overlay in OVERLAYS:
        template, container, _config = _node(render(overlay))
        assert container["command"] == image_entrypoint() == ["dawait", "serve"]
        user = template["spec"]["securityContext"]["runAsUser"]
        assert f"USER {user}:" in final


def test_probes_ports_and_scraping_point_at_what_the_node_serves() -> None:
    """(The local-pods test reads them for real: the probes, the Service, /metrics.)"""
    for overlay in OVERLAYS:
        manifests = render(overlay)
        template, container, config = _node(manifests)
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert int(config["DAWAIT_PORT"]) == port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert config["DAWAIT_OPEN_METRICS"] == "true", "annotation scrapers send no token"
        service = find(manifests, "Service", "dawait")
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def test_a_stopped_node_has_time_to_finish_before_it_is_killed() -> None:
    for overlay in OVERLAYS:
        template, container, config = _node(render(overlay))
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        # preStop, then SIGTERM: the grace period for steps, then closing and leaving.
        needed = float(pre_stop[1]) + float(config["DAWAIT_GRACE_PERIOD"]) + 5
        assert template["spec"]["terminationGracePeriodSeconds"] >= needed


def test_only_nodes_and_members_reach_etcd_and_tokens_come_as_files() -> None:
    for overlay in OVERLAYS:
        manifests = render(overlay)
        template, container, _config = _node(manifests)
        node_labels = template["metadata"]["labels"]
        policy = find(manifests, "NetworkPolicy", "dawait-etcd")["spec"]
        clients = policy["ingress"][0]
        assert [p["port"] for p in clients["ports"]] == [2379]
        allowed = [peer["podSelector"]["matchLabels"] for peer in clients["from"]]
        assert any(labels.items() <= node_labels.items() for labels in allowed)
        assert all("namespaceSelector" not in p and "ipBlock" not in p for p in clients["from"])
        env = {e["name"] for e in container["env"]}
        assert "DAWAIT_TOKEN" not in env
        assert "DAWAIT_TOKEN_FILE" in env
        assert all("secretKeyRef" not in str(e) for e in container["env"])
        secret = next(v for v in template["spec"]["volumes"] if "secret" in v)["secret"][
            "secretName"
        ]
        if overlay == "dev":  # prod's Secret is created out of band (docs/kubernetes.md)
            keys = find(manifests, "Secret", secret)["data"].keys()
            assert {"api-token", "cluster-token"} <= keys
