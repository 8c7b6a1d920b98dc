"""The rendered manifests of ``deploy/k8s`` (``kubectl kustomize``), and what a kubelet would
make of a pod's container spec when it runs here as a local process.

A container runs as its ``command`` and ``args`` with ``$(VAR)`` references expanded from its
environment: the image's ``ENV`` (from the Dockerfile's last stage), then ``envFrom``
ConfigMaps, then ``env`` (values, field references, ``$(VAR)`` in values). In place of what a
cluster gives a pod:

* its IP (``status.podIP``) is 127.0.0.1, and the cluster's DNS names (Services, and a
  StatefulSet pod's ``NAME.SERVICE``) resolve to 127.0.0.1;
* every port the manifests declare is a port of 127.0.0.1 free when the test starts
  (``local_ports``), put in place of the number wherever the pod's command, environment and
  hooks name it, so the pods share this machine with whatever else listens on it; a
  Service's port becomes the port its targetPort does, as kube-proxy would forward it;
* each volume mount's path is a folder of the test's; a Secret volume holds the Secret's
  keys as files, as the kubelet writes them;
* executables are found on this PATH (the project's venv first: ``dawait`` is the one the
  image installs, ``etcd`` is Debian's etcd 3.4 instead of the image's 3.5; the flags the
  manifests use mean the same in both).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.etcd import free_ports

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
DOCKERFILE = REPO / "Dockerfile"
POD_IP = "127.0.0.1"

Manifest = dict[str, Any]

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_PORT_KEYS = frozenset({"containerPort", "hostPort", "port", "targetPort"})
PORT_NUMBER = re.compile(r"(?<![\w.-])\d+(?![\w.])")
"""A number as a port stands in text: whole, or after ``:`` or ``=`` (not an IP's octet,
nor a digit of a name such as ``pod-0``)."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise AssertionError(
            "kubectl is not installed: the k8s tests render with kubectl kustomize"
        )
    return found


def render(overlay: str) -> list[Manifest]:
    """``kubectl kustomize deploy/k8s/overlays/OVERLAY``, parsed."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one manifest of ``kind`` (named ``name``, or the only one of its kind)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def generated(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """A ConfigMap or Secret that kustomize generated from ``name`` (with a hash suffix)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]+)?", m["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} generated from {name}, found {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last stage (PATH left out: this machine's is used)."""
    stages = DOCKERFILE.read_text().split("\nFROM ")
    text = stages[-1].replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                if key != "PATH":
                    env[key] = value
    return env


def image_entrypoint() -> list[str]:
    """The Dockerfile's ``ENTRYPOINT`` (exec form)."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert len(lines) == 1, "the Dockerfile has no single ENTRYPOINT"
    value: list[str] = yaml.safe_load(lines[0].removeprefix("ENTRYPOINT"))
    return value


def declared_ports(manifests: list[Manifest]) -> dict[int, str]:
    """Every port number the manifests declare (containers, probes, Services, network
    policies, ``*/port`` annotations), each with the first place that declares it."""
    found: dict[int, str] = {}

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (key in _PORT_KEYS or str(key).endswith("/port")) and str(value).isdigit():
                    found.setdefault(int(value), f"{where}.{key}")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for manifest in manifests:
        walk(manifest, f"{manifest['kind']}/{manifest['metadata']['name']}")
    return found


def local_ports(manifests: list[Manifest]) -> dict[int, int]:
    """Each container port of the workloads, and each Service port, onto a free port of
    POD_IP (never a declared number, which a mapped value could then be taken for). The pods
    here share one IP: a container port declared by two workloads, or a Service port that
    would stand for two ports, could not be told apart, and fails here."""
    declared = declared_ports(manifests)
    free = iter(p for p in free_ports(2 * len(declared)) if p not in declared)
    ports: dict[int, int] = {}
    owners: dict[int, str] = {}
    for workload in _workloads(manifests):
        name = workload["metadata"]["name"]
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                number = port["containerPort"]
                owner = owners.setdefault(number, name)
                assert owner == name, f"containerPort {number} of both {owner} and {name}"
                ports.setdefault(number, next(free))
    for service in (m for m in manifests if m["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            target = _target(manifests, service, port.get("targetPort", port["port"]))
            mapped = ports.setdefault(port["port"], ports[target])
            assert mapped == ports[target], (
                f"Service {service['metadata']['name']} port {port['port']} stands for "
                f"containerPort {target}, and port {port['port']} is another's"
            )
    return ports


def map_ports(value: str, ports: dict[int, int]) -> str:
    """``value`` with each port number of ``ports`` in it replaced by its local port."""
    return PORT_NUMBER.sub(lambda m: str(ports.get(int(m[0]), m[0])), value)


def _workloads(manifests: list[Manifest]) -> list[Manifest]:
    """What runs pods: the manifests with a pod template (Deployments, StatefulSets)."""
    return [
        m
        for m in manifests
        if "containers" in m.get("spec", {}).get("template", {}).get("spec", {})
    ]


def _target(manifests: list[Manifest], service: Manifest, target: str | int) -> int:
    """The containerPort a Service's targetPort names in the workloads it selects."""
    selector = service["spec"]["selector"].items()
    for workload in _workloads(manifests):
        if selector <= workload["spec"]["template"]["metadata"]["labels"].items():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                for port in container.get("ports", []):
                    if target in (port.get("name"), port["containerPort"]):
                        number: int = port["containerPort"]
                        return number
    raise AssertionError(f"Service {service['metadata']['name']} targets no port {target}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """What a pod of ``template`` named ``name`` runs: its first container, resolved."""

    name: str
    container: Manifest
    command: list[str]
    env: dict[str, str]
    """The container's whole environment (over this process's PATH and HOME)."""
    terminate_grace: float
    """``terminationGracePeriodSeconds``."""
    ports: dict[int, int]
    """Each declared port number onto the local port that stands for it (``local_ports``)."""

    def port(self, name_or_number: str | int) -> int:
        """The local port for a container port named (or numbered) as probes name them."""
        number = name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                number = port["containerPort"]
        if not isinstance(number, int) or number not in self.ports:
            raise AssertionError(
                f"container {self.container['name']} has no port {name_or_number} mapped"
            )
        return self.ports[number]

    def probe_url(self, probe: str) -> str:
        """The URL of the container's ``readinessProbe`` or ``livenessProbe`` (httpGet)."""
        get = self.container[probe]["httpGet"]
        return f"http://{POD_IP}:{self.port(get['port'])}{get['path']}"

    def pre_stop(self) -> list[str] | None:
        hook = self.container.get("lifecycle", {}).get("preStop", {})
        command: list[str] | None = hook.get("exec", {}).get("command")
        return None if command is None else [map_ports(part, self.ports) for part in command]


def pod(
    manifests: list[Manifest],
    workload: Manifest,
    name: str,
    volumes: Path,
    *,
    ports: dict[int, int],
    from_image: bool = False,
) -> Pod:
    """Pod ``name`` of ``workload`` (a Deployment or StatefulSet), its volumes in folders
    under ``volumes``, its ports mapped by ``ports`` (``local_ports``); ``from_image``: the
    image is dawait's (the Dockerfile's ENV applies)."""
    spec = workload["spec"]["template"]["spec"]
    namespace = workload["metadata"].get("namespace", "default")
    container = spec["containers"][0]
    paths = _mount(manifests, spec, container, volumes / name)
    dns = _dns_names(manifests, namespace)

    def local(value: str) -> str:
        """An expanded value (ports already mapped) with the cluster's names made local."""
        for host in dns:
            value = value.replace(f"//{host}:", f"//{POD_IP}:")
        for mount, folder in paths.items():
            value = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|$)", str(folder), value)
        return value

    # Ports are mapped in the manifests' own text, before $(VAR) expansion and mount paths
    # (a test's folder may hold a number such as a port): each number is mapped once.
    def mapped(value: object) -> str:
        return map_ports(str(value), ports)

    image = image_env() if from_image else {}
    env = {key: mapped(value) for key, value in image.items()}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        config = next(
            m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == ref
        )
        env.update({key: local(mapped(value)) for key, value in config["data"].items()})
    fields = {"metadata.name": name, "metadata.namespace": namespace, "status.podIP": POD_IP}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = local(expand(mapped(entry["value"]), env))
        else:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    command = [
        local(expand(mapped(part), env))
        for part in [*container["command"], *container.get("args", [])]
    ]
    base = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(volumes)}
    return Pod(
        name=name,
        container=container,
        command=command,
        env=base | env,
        terminate_grace=float(spec.get("terminationGracePeriodSeconds", 30)),
        ports=ports,
    )


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, others kept."""
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _mount(
    manifests: list[Manifest], spec: Manifest, container: Manifest, root: Path
) -> dict[str, Path]:
    """A folder for each of the container's volume mounts (a Secret's keys as files)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    paths: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        folder = root / mount["name"]
        folder.mkdir(parents=True)
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is not None:
            data = next(
                m["data"]
                for m in manifests
                if m["kind"] == "Secret" and m["metadata"]["name"] == secret["secretName"]
            )
            for key, encoded in data.items():
                (folder / key).write_bytes(base64.b64decode(encoded))
        paths[mount["mountPath"]] = folder
    return paths


def _dns_names(manifests: list[Manifest], namespace: str) -> list[str]:
    """The names the cluster's DNS gives: Services, and StatefulSet pods under theirs."""
    names: list[str] = []
    for m in manifests:
        if m["kind"] == "Service":
            names.append(m["metadata"]["name"])
        if m["kind"] == "StatefulSet":
            service = m["spec"]["serviceName"]
            names += [
                f"{m['metadata']['name']}-{k}.{service}" for k in range(m["spec"]["replicas"])
            ]
    suffixes = ("", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.cluster.local")
    # Longest first: a pod's name.service is replaced before the bare service's name.
    return sorted({n + s for n in names for s in suffixes}, key=len, reverse=True)
