"""The Kubernetes deployment: every overlay renders, validates against the Kubernetes
schemas, and keeps the platform invariants.

Each overlay is rendered with `tests.support.kustomize` (no kustomize binary needed), validated
strictly with `kubernetes_validate`, then walked by policy checks. A check returns the list of
problems it finds; the mutation table at the end proves each check fails on the defect it exists
to catch.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# kubernetes-validate ships no type information.
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from shared.settings import Settings
from tests.support.kustomize import (
    Doc,
    RenderError,
    Unsupported,
    name_hash,
    pod_spec,
    render,
    strategic_merge,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCS = ROOT / "docs" / "kubernetes.md"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes release the manifests support, and the newest schemas available.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

SERVICES = ("api", "executor", "scheduler", "kafka-listener", "storage-listener", "notifier")
AUTOSCALED = frozenset({"executor", "kafka-listener", "storage-listener"})
SECRET_ENV = frozenset(
    {
        "SLUICE_DATABASE_URL",
        "SLUICE_BOOTSTRAP_TOKEN",
        "SLUICE_WEBHOOK_TOKENS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "SLUICE_KAFKA_SASL_PASSWORD",
        "SLUICE_SECRET_KEY",
    }
)
# Components that open sealed connection secrets (shared.secret_box).
NEEDS_SECRET_KEY = frozenset({"api", "executor", "kafka-listener", "notifier", "migrate"})
# Secrets production expects to exist in the namespace (created outside these manifests).
EXTERNAL_SECRETS = frozenset(
    {"sluice-database", "sluice-tokens", "sluice-s3", "sluice-kafka", "sluice-secret-key"}
)
RUN_AS_USER = 10001
# Which settings each named container port must agree with.
PORT_SETTINGS = {
    "metrics": "SLUICE_METRICS_PORT",
    "http": "SLUICE_API_PORT",
    "webhook": "SLUICE_WEBHOOK_PORT",
}

DNS_AND_POSTGRES = frozenset({(53, "UDP"), (53, "TCP"), (5432, "TCP")})
KAFKA = frozenset({(9092, "TCP"), (9093, "TCP")})
OBJECT_STORAGE = frozenset({(443, "TCP"), (9000, "TCP")})
EXPECTED_EGRESS = {
    "api": DNS_AND_POSTGRES,
    "scheduler": DNS_AND_POSTGRES,
    "migrate": DNS_AND_POSTGRES,
    "kafka-listener": DNS_AND_POSTGRES | KAFKA,
    "storage-listener": DNS_AND_POSTGRES | KAFKA | OBJECT_STORAGE,
    "executor": DNS_AND_POSTGRES | KAFKA | OBJECT_STORAGE,
    "notifier": DNS_AND_POSTGRES | {(443, "TCP"), (80, "TCP"), (25, "TCP")},
}
# Destinations probed for egress: the expected ones plus some no pod should reach.
EGRESS_PROBES = (
    DNS_AND_POSTGRES | KAFKA | OBJECT_STORAGE | {(80, "TCP"), (25, "TCP"), (6379, "TCP")}
)
# Ports nothing listens on: no policy may open them.
CLOSED_INGRESS_PORTS = (22, 5000, 5432, 8000)

Check = Callable[[list[Doc]], list[str]]


@functools.cache
def _rendered(overlay: str) -> tuple[Doc, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[Doc]:
    """A private copy of the overlay's documents (checks and mutations may change it)."""
    return copy.deepcopy(list(_rendered(overlay)))


# --- document helpers -------------------------------------------------------------------------


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if pod_spec(d) is not None]


def pod(doc: Doc) -> Doc:
    spec = pod_spec(doc)
    assert spec is not None, ident(doc)
    return spec


def pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"].get("labels") or {}
    return labels


def component(doc: Doc) -> str:
    return pod_labels(doc).get("app.kubernetes.io/component", "")


def containers(doc: Doc) -> list[Doc]:
    spec = pod(doc)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def where(doc: Doc, container: Doc) -> str:
    return f"{ident(doc)} container {container['name']}"


def get(doc: Any, *path: str | int) -> Any:
    """The value at `path`, or None when any step is missing."""
    for step in path:
        if isinstance(doc, dict) and isinstance(step, str):
            doc = doc.get(step)
        elif isinstance(doc, list) and isinstance(step, int) and -len(doc) <= step < len(doc):
            doc = doc[step]
        else:
            return None
    return doc


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    """An object by kind and name; generated names match with or without their hash suffix."""
    pattern = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    for doc in of_kind(docs, kind):
        if pattern.fullmatch(doc["metadata"]["name"]):
            return doc
    return None


def effective_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """Literal environment of a container: its ConfigMaps, then `env` values (which win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        config = find(docs, "ConfigMap", ref["name"]) if ref else None
        if config is not None:
            env.update(config.get("data") or {})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def setting(docs: list[Doc], container: Doc, name: str) -> str:
    """The value a `SLUICE_*` setting takes in this container (the code default when unset)."""
    env = effective_env(docs, container)
    if name in env:
        return env[name]
    return str(Settings.model_fields[name.removeprefix("SLUICE_").lower()].default)


def port_number(container: Doc, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            number: int = declared["containerPort"]
            return number
    return None


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# --- policy checks ------------------------------------------------------------------------------


def check_namespace(docs: list[Doc]) -> list[str]:
    """One Namespace, enforcing Pod Security `restricted`, holding every other object."""
    namespaces = of_kind(docs, "Namespace")
    if len(namespaces) != 1:
        return [f"expected one Namespace, found {len(namespaces)}"]
    namespace = namespaces[0]
    name = namespace["metadata"]["name"]
    labels = namespace["metadata"].get("labels") or {}
    problems = []
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append(f"Namespace {name} does not enforce Pod Security restricted")
    for doc in docs:
        if doc is not namespace and doc["metadata"].get("namespace") != name:
            problems.append(f"{ident(doc)} is not in namespace {name}")
    return problems


def check_pod_security(docs: list[Doc]) -> list[str]:
    """Pod Security `restricted` plus a read-only root filesystem for every container."""
    problems = []
    for doc in workloads(docs):
        spec = pod(doc)
        pod_context = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{ident(doc)} sets {flag}")
        problems.extend(
            f"{ident(doc)} mounts hostPath volume {v['name']}"
            for v in spec.get("volumes", [])
            if "hostPath" in v
        )
        for container in containers(doc):
            context = container.get("securityContext") or {}
            # Container settings override the pod's for the fields both levels have.
            effective = {**pod_context, **context}
            at = where(doc, container)
            if effective.get("runAsNonRoot") is not True:
                problems.append(f"{at}: runAsNonRoot is not true")
            if effective.get("runAsUser") != RUN_AS_USER:
                problems.append(f"{at}: runAsUser is not {RUN_AS_USER}")
            if get(effective, "seccompProfile", "type") != "RuntimeDefault":
                problems.append(f"{at}: seccompProfile is not RuntimeDefault")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation is not false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: readOnlyRootFilesystem is not true")
            if context.get("privileged"):
                problems.append(f"{at}: privileged")
            if "ALL" not in (get(context, "capabilities", "drop") or []):
                problems.append(f"{at}: capabilities do not drop ALL")
            if get(context, "capabilities", "add"):
                problems.append(f"{at}: capabilities add {context['capabilities']['add']}")
    return problems


def check_writable_dirs(docs: list[Doc]) -> list[str]:
    """A read-only root needs an emptyDir at /tmp, and TMPDIR/HOME must point at writable mounts;
    the executor (child processes of node code) sets both."""
    problems = []
    for doc in workloads(docs):
        scratch = {v["name"] for v in pod(doc).get("volumes", []) if "emptyDir" in v}
        for container in containers(doc):
            at = where(doc, container)
            writable = {
                m["mountPath"]
                for m in container.get("volumeMounts", [])
                if m["name"] in scratch and not m.get("readOnly")
            }
            if "/tmp" not in writable:
                problems.append(f"{at}: no emptyDir mounted at /tmp")
            env = effective_env(docs, container)
            required = ("TMPDIR", "HOME") if component(doc) == "executor" else ()
            for var in ("TMPDIR", "HOME"):
                if var in env and env[var] not in writable:
                    problems.append(f"{at}: {var}={env[var]} is not a writable mount")
                elif var not in env and var in required:
                    problems.append(f"{at}: {var} is not set")
    return problems


def check_resources(docs: list[Doc]) -> list[str]:
    """CPU and memory requests (the scheduler and the HPA need them) and a memory limit."""
    problems = []
    for doc in workloads(docs):
        for container in containers(doc):
            resources = container.get("resources") or {}
            for section, name in (
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ):
                if not get(resources, section, name):
                    problems.append(f"{where(doc, container)}: {section}.{name} is not set")
    return problems


def check_probes(docs: list[Doc]) -> list[str]:
    """Liveness on /healthz and readiness on /readyz, both on the metrics port."""
    problems = []
    for doc in of_kind(docs, "Deployment"):
        for container in containers(doc):
            at = where(doc, container)
            metrics_port = int(setting(docs, container, "SLUICE_METRICS_PORT"))
            for probe, path in (
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("startupProbe", "/healthz"),
            ):
                action = get(container, probe, "httpGet")
                if action is None:
                    if probe != "startupProbe":
                        problems.append(f"{at}: no {probe} httpGet")
                    continue
                if action.get("path") != path:
                    problems.append(f"{at}: {probe} path is {action.get('path')}, not {path}")
                if port_number(container, action.get("port")) != metrics_port:
                    problems.append(f"{at}: {probe} is not on the metrics port {metrics_port}")
    return problems


def check_ports(docs: list[Doc]) -> list[str]:
    """Container ports agree with the settings the process listens on; Prometheus scrapes the
    metrics port."""
    problems = []
    for doc in of_kind(docs, "Deployment"):
        annotations = doc["spec"]["template"]["metadata"].get("annotations") or {}
        for container in containers(doc):
            at = where(doc, container)
            for port in container.get("ports", []):
                variable = PORT_SETTINGS.get(port.get("name", ""))
                if variable is None:
                    problems.append(f"{at}: port {port} is not one sluice serves")
                elif str(port["containerPort"]) != setting(docs, container, variable):
                    problems.append(f"{at}: port {port['name']} is not {variable}")
            metrics = port_number(container, "metrics")
            if metrics is None:
                problems.append(f"{at}: no metrics port")
            elif (
                annotations.get("prometheus.io/scrape") != "true"
                or annotations.get("prometheus.io/port") != str(metrics)
                or annotations.get("prometheus.io/path") != "/metrics"
            ):
                problems.append(f"{ident(doc)}: Prometheus annotations miss port {metrics}")
    return problems


def _image_name(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    if digest:
        return name, digest
    tail = name.rsplit("/", 1)[-1]
    return name, tail.partition(":")[2] or None


def check_workloads(docs: list[Doc]) -> list[str]:
    """One Deployment per service running `sluice run <service>`, the migration Job, one image
    for all, pinned (a tag other than latest, or a digest)."""
    problems = []
    deployments = {component(d): d for d in of_kind(docs, "Deployment")}
    if sorted(deployments) != sorted(SERVICES) or len(of_kind(docs, "Deployment")) != len(SERVICES):
        problems.append(f"Deployments are {sorted(deployments)}, expected {sorted(SERVICES)}")
    for service, doc in deployments.items():
        args = [c.get("args") for c in containers(doc)]
        if args != [["run", service]]:
            problems.append(f"{ident(doc)} runs {args}, not sluice run {service}")
    jobs = of_kind(docs, "Job")
    if [[c.get("args") for c in containers(j)] for j in jobs] != [[["migrate"]]]:
        problems.append("expected exactly one Job, running `sluice migrate`")
    images = {c["image"] for d in workloads(docs) for c in containers(d)}
    if len(images) != 1:
        problems.append(f"services use different images: {sorted(images)}")
    for image in images:
        _, version = _image_name(image)
        if version is None or version == "latest":
            problems.append(f"image {image} is not pinned to a tag or digest")
    return problems


def check_service_accounts(docs: list[Doc]) -> list[str]:
    """Pods run as the sluice ServiceAccount without an API token and without service links
    (which would inject SLUICE_API_PORT=tcp://... from the sluice-api Service)."""
    problems = []
    accounts = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceAccount")}
    for name, account in accounts.items():
        if account.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {name} automounts its token")
    for doc in workloads(docs):
        spec = pod(doc)
        if spec.get("serviceAccountName") not in accounts:
            problems.append(f"{ident(doc)} uses ServiceAccount {spec.get('serviceAccountName')}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{ident(doc)} automounts a ServiceAccount token")
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{ident(doc)} does not disable service links")
    return problems


def _secret_references(doc: Doc) -> Iterator[tuple[Doc, Doc, str | None]]:
    """(container, reference, env name) for every Secret a container reads."""
    for container in containers(doc):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield container, source["secretRef"], None
        for var in container.get("env", []):
            ref = get(var, "valueFrom", "secretKeyRef")
            if ref is not None:
                yield container, ref, var["name"]


def check_secret_usage(docs: list[Doc]) -> list[str]:
    """Secret values come from Secrets only: never a literal `value`, never a ConfigMap."""
    problems = []
    for doc in workloads(docs):
        for container in containers(doc):
            for var in container.get("env", []):
                if var["name"] not in SECRET_ENV:
                    continue
                if "value" in var:
                    problems.append(f"{where(doc, container)}: {var['name']} has a literal value")
                elif get(var, "valueFrom", "secretKeyRef") is None:
                    problems.append(f"{where(doc, container)}: {var['name']} is not from a Secret")
    for config in of_kind(docs, "ConfigMap"):
        leaked = SECRET_ENV & set(config.get("data") or {})
        if leaked:
            problems.append(f"{ident(config)} holds secret settings {sorted(leaked)}")
    return problems


def check_sealing_key(docs: list[Doc]) -> list[str]:
    """Every component that opens connection secrets gets SLUICE_SECRET_KEY from the
    `sluice-secret-key` Secret: without it the api, executor, notifier and the migration job
    refuse to start, and the kafka-listener cannot consume triggers of a `kafka` connection."""
    problems = []
    for doc in workloads(docs):
        if component(doc) not in NEEDS_SECRET_KEY:
            continue
        refs = [
            get(var, "valueFrom", "secretKeyRef") or {}
            for container in containers(doc)
            for var in container.get("env", [])
            if var["name"] == "SLUICE_SECRET_KEY"
        ]
        # The dev overlay generates the Secret, whose name then carries a content hash.
        if not any(str(ref.get("name", "")).startswith("sluice-secret-key") for ref in refs):
            problems.append(f"{ident(doc)}: no SLUICE_SECRET_KEY from the sluice-secret-key Secret")
    return problems


def check_references_resolve(docs: list[Doc]) -> list[str]:
    """Every ConfigMap and required Secret a pod reads exists with the key it reads
    (for a self-contained overlay, such as dev)."""
    problems = []
    for doc in workloads(docs):
        refs: list[tuple[Doc, str, Doc, str | None]] = [
            (container, "Secret", ref, ref.get("key"))
            for container, ref, _ in _secret_references(doc)
        ]
        refs += [
            (container, "ConfigMap", source["configMapRef"], None)
            for container in containers(doc)
            for source in container.get("envFrom", [])
            if "configMapRef" in source
        ]
        for container, kind, ref, key in refs:
            if ref.get("optional"):
                continue
            target = next(
                (d for d in of_kind(docs, kind) if d["metadata"]["name"] == ref["name"]), None
            )
            if target is None:
                problems.append(f"{where(doc, container)}: {kind} {ref['name']} is missing")
            elif key is not None and key not in (target.get("data") or {}):
                problems.append(f"{where(doc, container)}: {kind} {ref['name']} lacks {key}")
    return problems


def check_external_secrets(docs: list[Doc]) -> list[str]:
    """Production carries no Secret values: it only references the documented external Secrets."""
    problems = [
        f"{ident(d)} carries data in the manifests"
        for d in of_kind(docs, "Secret")
        if d.get("data") or d.get("stringData")
    ]
    for doc in workloads(docs):
        for container, ref, _ in _secret_references(doc):
            if ref["name"] not in EXTERNAL_SECRETS:
                problems.append(f"{where(doc, container)}: Secret {ref['name']} is undocumented")
    return problems


def _prestop_seconds(container: Doc) -> int:
    command = get(container, "lifecycle", "preStop", "exec", "command") or []
    if len(command) == 2 and command[0] == "sleep":
        return int(command[1])
    seconds: int = get(container, "lifecycle", "preStop", "sleep", "seconds") or 0
    return seconds


def check_termination_grace(docs: list[Doc]) -> list[str]:
    """terminationGracePeriodSeconds exceeds preStop + SLUICE_DRAIN_TIMEOUT_S, so a stopping
    process drains before the kubelet kills it."""
    problems = []
    for doc in of_kind(docs, "Deployment"):
        grace = pod(doc).get("terminationGracePeriodSeconds", 30)
        for container in containers(doc):
            drain = float(setting(docs, container, "SLUICE_DRAIN_TIMEOUT_S"))
            needed = drain + _prestop_seconds(container)
            if not grace > needed:
                problems.append(
                    f"{ident(doc)}: terminationGracePeriodSeconds {grace} <= preStop + drain "
                    f"timeout {needed:g}"
                )
    return problems


def _min_replicas(docs: list[Doc], deployment: Doc) -> int:
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]:
            count: int = hpa["spec"].get("minReplicas", 1)
            return count
    replicas: int = deployment["spec"].get("replicas", 1)
    return replicas


def check_disruption_budgets(docs: list[Doc]) -> list[str]:
    """Each Deployment has exactly one PodDisruptionBudget, and it lets a drain evict a pod."""
    problems = []
    budgets = of_kind(docs, "PodDisruptionBudget")
    deployments = of_kind(docs, "Deployment")
    for deployment in deployments:
        mine = [b for b in budgets if selects(b["spec"].get("selector"), pod_labels(deployment))]
        if len(mine) != 1:
            problems.append(f"{ident(deployment)} has {len(mine)} PodDisruptionBudgets")
            continue
        spec = mine[0]["spec"]
        if "maxUnavailable" in spec:
            allowed = str(spec["maxUnavailable"]) not in ("0", "0%")
        else:
            allowed = int(spec.get("minAvailable", 0)) < _min_replicas(docs, deployment)
        if not allowed:
            problems.append(f"{ident(mine[0])} allows no voluntary disruption")
    for budget in budgets:
        if not any(selects(budget["spec"].get("selector"), pod_labels(d)) for d in deployments):
            problems.append(f"{ident(budget)} selects no Deployment")
    return problems


def check_autoscaling(docs: list[Doc]) -> list[str]:
    """CPU HPAs for the executor and both listeners; the HPA alone owns their replica count."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    scaled: set[str] = set()
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        target = deployments.get(spec["scaleTargetRef"]["name"])
        if spec["scaleTargetRef"]["kind"] != "Deployment" or target is None:
            problems.append(f"{ident(hpa)} targets a missing Deployment")
            continue
        scaled.add(component(target))
        if not 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"]:
            problems.append(f"{ident(hpa)}: minReplicas/maxReplicas are inconsistent")
        resources = {get(m, "resource", "name") for m in spec.get("metrics", [])}
        if "cpu" not in resources:
            problems.append(f"{ident(hpa)} does not scale on CPU")
    if scaled != AUTOSCALED:
        problems.append(f"autoscaled components are {sorted(scaled)}, not {sorted(AUTOSCALED)}")
    for name, deployment in deployments.items():
        if component(deployment) in scaled and "replicas" in deployment["spec"]:
            problems.append(f"Deployment/{name} sets replicas that its HPA owns")
        if component(deployment) not in scaled and "replicas" not in deployment["spec"]:
            problems.append(f"Deployment/{name} sets no replicas and has no HPA")
    return problems


def check_services(docs: list[Doc]) -> list[str]:
    """Every Service selects existing pods, and its target ports exist on them."""
    problems = []
    for service in of_kind(docs, "Service"):
        selector = service["spec"].get("selector") or {}
        backends = [
            d
            for d in of_kind(docs, "Deployment")
            if selector and selects({"matchLabels": selector}, pod_labels(d))
        ]
        if not backends:
            problems.append(f"{ident(service)} selects no pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for backend in backends:
                if not any(port_number(c, target) for c in containers(backend)):
                    problems.append(f"{ident(service)}: {ident(backend)} has no port {target}")
    return problems


def _rule_allows(ports: list[Doc] | None, port: int, protocol: str, named: dict[str, int]) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        declared: int | str | None = entry.get("port")
        if declared is None:
            return True
        start = named.get(declared) if isinstance(declared, str) else declared
        if start is not None and start <= port <= entry.get("endPort", start):
            return True
    return False


def allows(docs: list[Doc], workload: Doc, direction: str, port: int, protocol: str) -> bool:
    """Whether the NetworkPolicies let traffic to/from this workload's pods on this port.

    Peers (`from` / `to`) are ignored on purpose: this asks which ports are reachable at all.
    Named ports resolve on the workload's own containers (ingress only, as in Kubernetes).
    """
    labels = pod_labels(workload)
    namespace = workload["metadata"].get("namespace")
    named = {
        p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", [])
    }
    field = direction.lower()
    isolating = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if p["metadata"].get("namespace") == namespace
        and selects(p["spec"].get("podSelector"), labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    return any(
        _rule_allows(rule.get("ports"), port, protocol, named if direction == "Ingress" else {})
        for policy in isolating
        for rule in policy["spec"].get(field) or []
    )


def check_network_policies(docs: list[Doc]) -> list[str]:
    """Default deny, then exactly the expected flows: ingress to the ports the pods serve,
    egress to DNS, PostgreSQL, Kafka, HTTPS and S3/MinIO per component."""
    problems = []
    default_deny = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not default_deny:
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress)")
    for workload in workloads(docs):
        at = ident(workload)
        served = {p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}
        for port in sorted(served):
            if not allows(docs, workload, "Ingress", port, "TCP"):
                problems.append(f"{at}: ingress to port {port} is blocked")
        for port in CLOSED_INGRESS_PORTS:
            if port not in served and allows(docs, workload, "Ingress", port, "TCP"):
                problems.append(f"{at}: ingress to unused port {port} is open")
        expected = EXPECTED_EGRESS.get(component(workload), frozenset())
        reachable = {p for p in EGRESS_PROBES if allows(docs, workload, "Egress", *p)}
        if reachable != expected:
            problems.append(
                f"{at}: egress opens {sorted(reachable - expected)}, "
                f"misses {sorted(expected - reachable)}"
            )
    return problems


def check_high_availability(docs: list[Doc]) -> list[str]:
    """Production: at least two pods of everything, spread over zones and nodes."""
    problems = []
    for deployment in of_kind(docs, "Deployment"):
        if _min_replicas(docs, deployment) < 2:
            problems.append(f"{ident(deployment)} may run a single pod")
        constraints = pod(deployment).get("topologySpreadConstraints") or []
        keys = {
            c["topologyKey"]
            for c in constraints
            if selects(c.get("labelSelector"), pod_labels(deployment))
        }
        missing = {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} - keys
        if missing:
            problems.append(f"{ident(deployment)} is not spread over {sorted(missing)}")
    return problems


COMMON_CHECKS: dict[str, Check] = {
    "namespace": check_namespace,
    "pod_security": check_pod_security,
    "writable_dirs": check_writable_dirs,
    "resources": check_resources,
    "probes": check_probes,
    "ports": check_ports,
    "workloads": check_workloads,
    "service_accounts": check_service_accounts,
    "secret_usage": check_secret_usage,
    "sealing_key": check_sealing_key,
    "termination_grace": check_termination_grace,
    "disruption_budgets": check_disruption_budgets,
    "autoscaling": check_autoscaling,
    "services": check_services,
    "network_policies": check_network_policies,
}
OVERLAY_CHECKS: dict[str, dict[str, Check]] = {
    "dev": {**COMMON_CHECKS, "references_resolve": check_references_resolve},
    "prod": {
        **COMMON_CHECKS,
        "external_secrets": check_external_secrets,
        "high_availability": check_high_availability,
    },
}


# --- tests: the real overlays ---------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_documents_validate_against_kubernetes_schemas(overlay: str, version: str) -> None:
    errors = []
    for doc in rendered(overlay):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{ident(doc)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{ident(doc)}: {exc.message}")
    assert errors == []


@pytest.mark.parametrize(
    ("overlay", "check"),
    [(overlay, name) for overlay, checks in OVERLAY_CHECKS.items() for name in checks],
)
def test_overlay_keeps_policy(overlay: str, check: str) -> None:
    assert OVERLAY_CHECKS[overlay][check](rendered(overlay)) == []


def test_base_is_namespace_agnostic() -> None:
    docs = render(K8S / "base")
    assert [ident(d) for d in docs if "namespace" in d["metadata"]] == []
    assert of_kind(docs, "Namespace") == []


def test_prod_external_secrets_are_documented() -> None:
    text = DOCS.read_text("utf-8")
    referenced = {
        (ref["name"], ref["key"])
        for doc in workloads(rendered("prod"))
        for _, ref, _ in _secret_references(doc)
    }
    assert {name for name, _ in referenced} == EXTERNAL_SECRETS
    assert [(n, k) for n, k in sorted(referenced) if n not in text or k not in text] == []


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed"
)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = {ident(d): d for d in yaml.safe_load_all(out) if d}
    mine = {ident(d): d for d in rendered(overlay)}
    assert mine == theirs


# --- tests: the checks fail on the defects they exist for ---------------------------------------

DELETE = object()


@dataclass(frozen=True)
class Mutation:
    """Set (or DELETE) the value at `path` in the object `kind`/`name`; an empty path replaces or
    removes the whole object, or adds `value` as a new object when none matches."""

    kind: str
    name: str
    path: tuple[str | int, ...]
    value: Any

    def apply(self, docs: list[Doc]) -> None:
        doc = find(docs, self.kind, self.name)
        if not self.path:
            if doc is not None:
                docs.remove(doc)
            if self.value is not DELETE:
                docs.append(copy.deepcopy(self.value))
            return
        assert doc is not None, f"no {self.kind} {self.name} to mutate"
        parent = get(doc, *self.path[:-1])
        last = self.path[-1]
        assert parent is not None, f"{self.path} not found in {self.kind} {self.name}"
        if self.value is DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(self.value)


CONTAINER = ("spec", "template", "spec", "containers", 0)
POD = ("spec", "template", "spec")
LEAKED_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "sluice-database", "namespace": "sluice"},
    "stringData": {"url": "postgresql://sluice:hunter2@db/sluice"},
}


@pytest.mark.parametrize(
    ("overlay", "check", "mutation", "expected"),
    [
        pytest.param(
            "prod",
            "pod_security",
            Mutation("Deployment", "sluice-executor", (*CONTAINER, "securityContext"), DELETE),
            "allowPrivilegeEscalation is not false",
            id="missing-securityContext",
        ),
        pytest.param(
            "prod",
            "pod_security",
            Mutation(
                "Deployment",
                "sluice-api",
                (*CONTAINER, "securityContext", "readOnlyRootFilesystem"),
                False,
            ),
            "readOnlyRootFilesystem",
            id="writable-root",
        ),
        pytest.param(
            "dev",
            "pod_security",
            Mutation(
                "Deployment",
                "sluice-scheduler",
                (*CONTAINER, "securityContext", "capabilities", "drop"),
                [],
            ),
            "drop ALL",
            id="capabilities-kept",
        ),
        pytest.param(
            "prod",
            "pod_security",
            Mutation(
                "Deployment",
                "sluice-kafka-listener",
                (*CONTAINER, "securityContext", "runAsUser"),
                0,
            ),
            "runAsUser",
            id="root-user",
        ),
        pytest.param(
            "prod",
            "pod_security",
            Mutation(
                "Job",
                "sluice-migrate",
                (*CONTAINER, "securityContext", "seccompProfile", "type"),
                "Unconfined",
            ),
            "seccompProfile",
            id="unconfined-seccomp",
        ),
        pytest.param(
            "prod",
            "pod_security",
            Mutation("Deployment", "sluice-api", (*POD, "hostNetwork"), True),
            "hostNetwork",
            id="host-network",
        ),
        pytest.param(
            "prod",
            "writable_dirs",
            Mutation("Deployment", "sluice-executor", (*CONTAINER, "volumeMounts"), DELETE),
            "/tmp",
            id="no-tmp-volume",
        ),
        pytest.param(
            "prod",
            "writable_dirs",
            Mutation("Deployment", "sluice-executor", (*CONTAINER, "env", 2), DELETE),
            "HOME is not set",
            id="executor-without-home",
        ),
        pytest.param(
            "prod",
            "resources",
            Mutation("Deployment", "sluice-scheduler", (*CONTAINER, "resources", "limits"), DELETE),
            "limits.memory",
            id="no-memory-limit",
        ),
        pytest.param(
            "prod",
            "probes",
            Mutation(
                "Deployment",
                "sluice-storage-listener",
                (*CONTAINER, "livenessProbe", "httpGet", "port"),
                "webhook",
            ),
            "livenessProbe is not on the metrics port",
            id="probe-on-webhook-port",
        ),
        pytest.param(
            "prod",
            "probes",
            Mutation(
                "Deployment",
                "sluice-api",
                (*CONTAINER, "readinessProbe", "httpGet", "path"),
                "/healthz",
            ),
            "readinessProbe path",
            id="readiness-on-healthz",
        ),
        pytest.param(
            "dev",
            "probes",
            Mutation("Deployment", "sluice-executor", (*CONTAINER, "readinessProbe"), DELETE),
            "no readinessProbe",
            id="no-readiness",
        ),
        pytest.param(
            "prod",
            "ports",
            Mutation("Deployment", "sluice-api", (*CONTAINER, "ports", 1, "containerPort"), 9091),
            "port metrics is not SLUICE_METRICS_PORT",
            id="metrics-port-mismatch",
        ),
        pytest.param(
            "prod",
            "workloads",
            Mutation("Deployment", "sluice-api", (*CONTAINER, "image"), "sluice:latest"),
            "different images",
            id="other-image",
        ),
        pytest.param(
            "prod",
            "workloads",
            Mutation("Deployment", "sluice-scheduler", (*CONTAINER, "args"), ["run", "api"]),
            "not sluice run scheduler",
            id="wrong-command",
        ),
        pytest.param(
            "prod",
            "service_accounts",
            Mutation("Deployment", "sluice-executor", (*POD, "serviceAccountName"), "default"),
            "uses ServiceAccount default",
            id="default-service-account",
        ),
        pytest.param(
            "prod",
            "service_accounts",
            Mutation("Deployment", "sluice-api", (*POD, "automountServiceAccountToken"), True),
            "automounts",
            id="token-mounted",
        ),
        pytest.param(
            "prod",
            "service_accounts",
            Mutation("Deployment", "sluice-api", (*POD, "enableServiceLinks"), DELETE),
            "service links",
            id="service-links",
        ),
        pytest.param(
            "prod",
            "secret_usage",
            Mutation(
                "Deployment",
                "sluice-api",
                (*CONTAINER, "env", 0),
                {"name": "SLUICE_DATABASE_URL", "value": "postgresql://sluice:hunter2@db/sluice"},
            ),
            "SLUICE_DATABASE_URL has a literal value",
            id="literal-secret",
        ),
        pytest.param(
            "prod",
            "sealing_key",
            Mutation("Deployment", "sluice-notifier", (*CONTAINER, "env"), []),
            "sluice-notifier: no SLUICE_SECRET_KEY",
            id="notifier-without-key",
        ),
        pytest.param(
            "dev",
            "secret_usage",
            Mutation("ConfigMap", "sluice-config", ("data", "AWS_SECRET_ACCESS_KEY"), "x"),
            "holds secret settings",
            id="secret-in-configmap",
        ),
        pytest.param(
            "prod",
            "external_secrets",
            Mutation("Secret", "sluice-database", (), LEAKED_SECRET),
            "carries data",
            id="secret-object-in-prod",
        ),
        pytest.param(
            "dev",
            "references_resolve",
            Mutation("Secret", "sluice-tokens", (), DELETE),
            "Secret sluice-tokens",
            id="missing-dev-secret",
        ),
        pytest.param(
            "prod",
            "termination_grace",
            Mutation("ConfigMap", "sluice-config", ("data", "SLUICE_DRAIN_TIMEOUT_S"), "90"),
            "Deployment/sluice-api: terminationGracePeriodSeconds 60",
            id="drain-longer-than-grace",
        ),
        pytest.param(
            "prod",
            "termination_grace",
            Mutation("Deployment", "sluice-executor", (*POD, "terminationGracePeriodSeconds"), 100),
            "sluice-executor",
            id="executor-grace",
        ),
        pytest.param(
            "prod",
            "disruption_budgets",
            Mutation("PodDisruptionBudget", "sluice-scheduler", (), DELETE),
            "Deployment/sluice-scheduler has 0",
            id="missing-pdb",
        ),
        pytest.param(
            "prod",
            "disruption_budgets",
            Mutation("PodDisruptionBudget", "sluice-api", ("spec", "maxUnavailable"), 0),
            "allows no voluntary disruption",
            id="blocking-pdb",
        ),
        pytest.param(
            "prod",
            "autoscaling",
            Mutation(
                "HorizontalPodAutoscaler",
                "sluice-executor",
                ("spec", "scaleTargetRef", "name"),
                "sluice-exec",
            ),
            "targets a missing Deployment",
            id="hpa-target",
        ),
        pytest.param(
            "prod",
            "autoscaling",
            Mutation("Deployment", "sluice-executor", ("spec", "replicas"), 2),
            "replicas that its HPA owns",
            id="replicas-fight-hpa",
        ),
        pytest.param(
            "prod",
            "services",
            Mutation(
                "Service",
                "sluice-webhook",
                ("spec", "selector", "app.kubernetes.io/component"),
                "storage-listner",
            ),
            "selects no pods",
            id="service-selector-typo",
        ),
        pytest.param(
            "prod",
            "services",
            Mutation("Service", "sluice-api", ("spec", "ports", 0, "targetPort"), "https"),
            "has no port https",
            id="service-target-port",
        ),
        pytest.param(
            "prod",
            "network_policies",
            Mutation("NetworkPolicy", "sluice-default-deny", (), DELETE),
            "no default-deny",
            id="no-default-deny",
        ),
        pytest.param(
            "prod",
            "network_policies",
            Mutation("NetworkPolicy", "sluice-allow-metrics", (), DELETE),
            "ingress to port 9090 is blocked",
            id="metrics-blocked",
        ),
        pytest.param(
            "prod",
            "network_policies",
            Mutation("NetworkPolicy", "sluice-allow-object-storage", ("spec", "podSelector"), {}),
            "Deployment/sluice-api: egress opens [(443, 'TCP'), (9000, 'TCP')]",
            id="egress-too-wide",
        ),
        pytest.param(
            "dev",
            "network_policies",
            Mutation("NetworkPolicy", "sluice-allow-api", ("spec", "ingress", 0, "ports"), DELETE),
            "ingress to unused port",
            id="ingress-all-ports",
        ),
        pytest.param(
            "prod",
            "namespace",
            Mutation(
                "Namespace",
                "sluice",
                ("metadata", "labels", "pod-security.kubernetes.io/enforce"),
                "baseline",
            ),
            "does not enforce Pod Security restricted",
            id="baseline-namespace",
        ),
        pytest.param(
            "prod",
            "high_availability",
            Mutation("Deployment", "sluice-api", (*POD, "topologySpreadConstraints"), DELETE),
            "Deployment/sluice-api is not spread",
            id="no-spread",
        ),
        pytest.param(
            "prod",
            "high_availability",
            Mutation("Deployment", "sluice-scheduler", ("spec", "replicas"), 1),
            "may run a single pod",
            id="single-scheduler",
        ),
    ],
)
def test_check_reports_defect(overlay: str, check: str, mutation: Mutation, expected: str) -> None:
    docs = rendered(overlay)
    assert OVERLAY_CHECKS[overlay][check](docs) == []
    mutation.apply(docs)
    problems = OVERLAY_CHECKS[overlay][check](docs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((*CONTAINER, "securityContext", "readOnlyRootFileSystem"), True),
        (("spec", "template", "spec", "terminationGracePeriodSeconds"), "sixty"),
        (("spec", "strategy", "type"), ["RollingUpdate"]),
    ],
)
def test_schema_validation_rejects_invalid_fields(path: tuple[str | int, ...], value: Any) -> None:
    docs = rendered("prod")
    Mutation("Deployment", "sluice-api", path, value).apply(docs)
    doc = find(docs, "Deployment", "sluice-api")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


# --- tests: the renderer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 3, "d": 4}}, {"a": {"b": 1, "c": 3, "d": 4}}),
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
        (
            {"containers": [{"name": "x", "image": "i", "args": ["a"]}]},
            {"containers": [{"name": "x", "args": ["b"]}, {"name": "y", "image": "j"}]},
            {
                "containers": [
                    {"name": "x", "image": "i", "args": ["b"]},
                    {"name": "y", "image": "j"},
                ]
            },
        ),
        # Kustomize's order: the patch's items first, in its order, then the untouched ones.
        (
            {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"env": [{"name": "C", "value": "4"}, {"name": "B", "value": "3"}]},
            {
                "env": [
                    {"name": "C", "value": "4"},
                    {"name": "B", "value": "3"},
                    {"name": "A", "value": "1"},
                ]
            },
        ),
        (
            {"ports": [{"name": "http", "containerPort": 8080}]},
            {"ports": [{"name": "metrics", "containerPort": 9090}]},
            {
                "ports": [
                    {"name": "metrics", "containerPort": 9090},
                    {"name": "http", "containerPort": 8080},
                ]
            },
        ),
        (
            {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            {"ports": [{"port": 80, "targetPort": 8080}]},
            {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        ),
        # Lists without a merge key are replaced whole.
        ({"args": ["a", "b"]}, {"args": ["c"]}, {"args": ["c"]}),
        (
            {"tolerations": [{"key": "a"}]},
            {"tolerations": [{"key": "b"}]},
            {"tolerations": [{"key": "b"}]},
        ),
    ],
)
def test_strategic_merge(target: Doc, patch: Doc, expected: Doc) -> None:
    assert strategic_merge(target, patch) == expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # Values produced by `kubectl kustomize` (kustomize v5.5) for the same generator input.
        ({"kind": "ConfigMap", "data": {"a": "1"}}, "h29d89cmmt"),
        ({"kind": "ConfigMap", "data": {"a": "1", "b": "<x&y>", "c": "é"}}, "fc4m7tdg75"),
        ({"kind": "Secret", "type": "Opaque", "data": {"password": "czNjcjN0"}}, "25k92892fb"),
        (
            {
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "eA==", "tls.key": "eQ=="},
            },
            "f4c6k54dt5",
        ),
    ],
)
def test_name_hash_matches_kustomize(doc: Doc, expected: str) -> None:
    assert name_hash({**doc, "metadata": {"name": "ignored"}}) == expected


def test_generated_names_and_references(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "registry:5000/app:1",
                                    "envFrom": [{"secretRef": {"name": "db"}}],
                                }
                            ]
                        }
                    }
                },
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["pod.yaml"],
                "images": [{"name": "registry:5000/app", "newTag": "2"}],
                "secretGenerator": [
                    {
                        "name": "db",
                        # Long enough to be written as 70-character base64 lines.
                        "literals": [
                            "url=postgresql://sluice:sluice@postgres.sluice-deps.svc:5432/sluice"
                        ],
                    }
                ],
            }
        )
    )
    docs = {d["kind"]: d for d in render(tmp_path)}
    assert docs["Secret"]["metadata"]["name"] == "db-fdk2d2bh4k"
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "db-fdk2d2bh4k"}}]
    assert container["image"] == "registry:5000/app:2"


@pytest.mark.parametrize(
    ("kustomization", "error"),
    [
        ({"namePrefix": "x-"}, Unsupported),
        ({"commonLabels": {"a": "b"}}, Unsupported),
        ({"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]}, Unsupported),
        ({"configMapGenerator": [{"name": "c", "files": ["f.txt"]}]}, Unsupported),
        ({"resources": ["https://example.com/base"]}, Unsupported),
        (
            {"patches": [{"patch": '[{"op": "remove", "path": "/x"}]', "target": {"kind": "A"}}]},
            Unsupported,
        ),
        ({"patches": [{"patch": "kind: Service\nmetadata: {name: nothing}\n"}]}, RenderError),
        (
            {"configMapGenerator": [{"name": "c", "behavior": "merge", "literals": ["a=1"]}]},
            RenderError,
        ),
    ],
)
def test_renderer_refuses_what_it_cannot_render(
    tmp_path: Path, kustomization: Doc, error: type[Exception]
) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with pytest.raises(error):
        render(tmp_path)
