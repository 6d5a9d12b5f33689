"""A small, pure-Python renderer for the Kustomize subset that `k8s/` uses.

It exists so the manifest tests run without a kustomize binary. Supported: `resources` (files and
directories), `namespace`, `labels` (`pairs`, `includeTemplates`), `images`, `replicas`,
`configMapGenerator` / `secretGenerator` (`literals`, `behavior`, Secret `type`) with kustomize's
content-hash name suffix and the rewrite of references to generated names, and `patches`
(strategic merge, from `path` or inline `patch`, optionally with a `target` of kind / name /
labelSelector). Anything else raises `Unsupported`, so a manifest change that needs more is noticed
instead of being rendered wrong. Transformers run in kustomize's order: patches, namespace,
labels, replicas, images; name hashes are added last, at the top level only.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KNOWN_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "images",
        "replicas",
        "configMapGenerator",
        "secretGenerator",
        "patches",
    }
)
# Kinds without a namespace among those a kustomization might hold.
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
_TEMPLATED = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
_SCALABLE = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})
# Strategic-merge keys of the list fields of pod templates (and Service ports); other lists are
# replaced whole, as kustomize does for lists without a merge strategy.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}


class Unsupported(NotImplementedError):
    """The kustomization uses a feature this renderer does not implement."""


class RenderError(ValueError):
    """The kustomization is invalid (what kustomize itself would refuse)."""


@dataclass
class _Resource:
    doc: Doc
    generated: bool = False


def render(directory: Path) -> list[Doc]:
    """Render the kustomization in `directory` like `kubectl kustomize` (documents, unordered)."""
    resources = _accumulate(directory)
    _add_name_hashes(resources)
    return [r.doc for r in resources]


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """`patch` applied to `target` with strategic-merge semantics for the lists in `_MERGE_KEYS`.

    Maps merge recursively, `null` deletes a key, keyed lists merge item by item (the patch's
    items first, in its order, then the untouched originals), any other value replaces. Patch
    directives (`$patch`, ...) are not supported.
    """
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            target = {}
        merged = dict(target)
        for key, value in patch.items():
            if key.startswith("$"):
                raise Unsupported(f"strategic-merge directive {key}")
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(merged.get(key), value, key)
        return merged
    merge_key = _list_merge_key(field, patch)
    if merge_key is not None and isinstance(target, list):
        # Kustomize's order: the patch's items (merged into their originals), then the
        # originals the patch does not mention.
        originals = {old.get(merge_key): old for old in target}
        patched = [strategic_merge(originals.get(item[merge_key]), item) for item in patch]
        named = {item[merge_key] for item in patch}
        return patched + [old for old in target if old.get(merge_key) not in named]
    return copy.deepcopy(patch)


def name_hash(doc: Doc) -> str:
    """Kustomize's 10-character content hash of a generated ConfigMap or Secret."""
    kind = doc["kind"]
    # The name takes part as an empty string (kustomize hashes before naming the object).
    encoded: dict[str, Any] = {"kind": kind, "name": ""}
    encoded["data"] = doc.get("data", {})
    if kind == "Secret":
        encoded["type"] = doc.get("type", "Opaque")
    elif doc.get("binaryData"):
        encoded["binaryData"] = doc["binaryData"]
    digest = hashlib.sha256(_go_json(encoded).encode("utf-8")).hexdigest()
    # Kustomize swaps a few characters so that suffixes never spell words.
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def _go_json(value: Any) -> str:
    """JSON exactly as Go's encoding/json writes it (sorted keys, HTML characters escaped)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _list_merge_key(field: str, patch: Any) -> str | None:
    if not isinstance(patch, list) or not all(isinstance(item, dict) for item in patch):
        return None
    key = _MERGE_KEYS.get(field)
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        key = "containerPort" if all("containerPort" in item for item in patch) else "port"
    if key is None:
        return None
    if not all(key in item for item in patch):
        raise RenderError(f"every item of {field} in a patch needs its merge key {key}")
    return key


def _kustomization(directory: Path) -> Doc:
    for name in _KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text("utf-8")) or {}
            if not isinstance(loaded, dict):
                raise RenderError(f"{path} is not a mapping")
            unknown = set(loaded) - _KNOWN_KEYS
            if unknown:
                raise Unsupported(f"{path}: {', '.join(sorted(unknown))}")
            return loaded
    raise RenderError(f"no kustomization file in {directory}")


def _load_documents(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise RenderError(f"{path}: every document needs kind and metadata")
    return docs


def _accumulate(directory: Path) -> list[_Resource]:
    k = _kustomization(directory)
    resources: list[_Resource] = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources.extend(_accumulate(path))
        elif path.is_file():
            resources.extend(_Resource(doc) for doc in _load_documents(path))
        else:
            raise Unsupported(f"resource {entry!r} (only local files and directories)")
    for spec in k.get("configMapGenerator", []):
        _generate(resources, spec, "ConfigMap")
    for spec in k.get("secretGenerator", []):
        _generate(resources, spec, "Secret")
    _check_unique(resources)
    for patch in k.get("patches", []):
        _apply_patch(resources, directory, patch)
    if "namespace" in k:
        _set_namespace(resources, k["namespace"])
    for labels in k.get("labels", []):
        _add_labels(resources, labels)
    for replicas in k.get("replicas", []):
        _set_replicas(resources, replicas)
    for image in k.get("images", []):
        _set_image(resources, image)
    return resources


def _identity(doc: Doc) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def _check_unique(resources: list[_Resource]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in resources:
        identity = _identity(r.doc)
        if identity in seen:
            raise RenderError(f"duplicate resource {identity}")
        seen.add(identity)


def _literal_pairs(spec: Doc) -> dict[str, str]:
    unsupported = set(spec) - {"name", "literals", "behavior", "type"}
    if unsupported:
        raise Unsupported(f"generator fields {', '.join(sorted(unsupported))}")
    pairs: dict[str, str] = {}
    for literal in spec.get("literals", []):
        key, sep, value = str(literal).partition("=")
        if not sep or not key:
            raise RenderError(f"generator literal {literal!r} is not KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            raise Unsupported(f"quoted generator literal {literal!r}")
        pairs[key] = value
    return pairs


def _base64(value: str) -> str:
    """Base64 as kustomize writes Secret data: lines of 70 characters once it reaches 70."""
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    if len(encoded) < 70:
        return encoded
    return "".join(encoded[i : i + 70] + "\n" for i in range(0, len(encoded), 70))


def _generate(resources: list[_Resource], spec: Doc, kind: str) -> None:
    name = spec["name"]
    pairs = _literal_pairs(spec)
    data = {k: _base64(v) for k, v in pairs.items()} if kind == "Secret" else pairs
    behavior = spec.get("behavior", "create")
    existing = next(
        (
            r
            for r in resources
            if r.generated and r.doc["kind"] == kind and r.doc["metadata"]["name"] == name
        ),
        None,
    )
    if behavior == "create":
        if existing is not None:
            raise RenderError(f"{kind} {name} is generated twice (use behavior: merge)")
        doc: Doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data}
        if kind == "Secret":
            doc["type"] = spec.get("type", "Opaque")
        resources.append(_Resource(doc, generated=True))
    elif behavior in ("merge", "replace"):
        if existing is None:
            raise RenderError(f"{kind} {name}: behavior {behavior} needs a generated base")
        base = {} if behavior == "replace" else existing.doc.get("data", {})
        existing.doc["data"] = {**base, **data}
    else:
        raise RenderError(f"unknown generator behavior {behavior!r}")


def _patch_documents(directory: Path, patch: Doc) -> list[Doc]:
    unsupported = set(patch) - {"path", "patch", "target"}
    if unsupported:
        raise Unsupported(f"patch fields {', '.join(sorted(unsupported))}")
    if "path" in patch:
        text = (directory / patch["path"]).read_text("utf-8")
    elif "patch" in patch:
        text = patch["patch"]
    else:
        raise RenderError("a patch needs path or patch")
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if any(not isinstance(d, dict) for d in docs):
        raise Unsupported("JSON 6902 patches")
    return docs


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    for term in selector.split(","):
        key, sep, value = term.strip().partition("=")
        if not sep or value.startswith("=") or key.endswith("!"):
            raise Unsupported(f"label selector term {term!r} (only key=value)")
        if labels.get(key) != value:
            return False
    return True


def _target_matches(target: Doc, doc: Doc) -> bool:
    unsupported = set(target) - {"kind", "name", "labelSelector"}
    if unsupported:
        raise Unsupported(f"patch target fields {', '.join(sorted(unsupported))}")
    # Kustomize matches kind and name as anchored regular expressions.
    for field, actual in (("kind", doc["kind"]), ("name", doc["metadata"]["name"])):
        if field in target and not re.fullmatch(target[field], actual):
            return False
    selector = target.get("labelSelector")
    return selector is None or _labels_match(selector, doc["metadata"].get("labels") or {})


def _apply_patch(resources: list[_Resource], directory: Path, patch: Doc) -> None:
    for body in _patch_documents(directory, patch):
        if "target" in patch:
            matches = [r for r in resources if _target_matches(patch["target"], r.doc)]
        else:
            kind, name = body.get("kind"), (body.get("metadata") or {}).get("name")
            matches = [
                r for r in resources if r.doc["kind"] == kind and r.doc["metadata"]["name"] == name
            ]
        if not matches:
            raise RenderError(f"patch matches no resource: {patch.get('target') or body}")
        for resource in matches:
            # The patch's own name is only an identifier: the target keeps its name.
            merged = strategic_merge(resource.doc, body)
            merged["metadata"] = {**merged["metadata"], "name": resource.doc["metadata"]["name"]}
            resource.doc = merged


def _set_namespace(resources: list[_Resource], namespace: str) -> None:
    for r in resources:
        if r.doc["kind"] == "Namespace":
            # Kustomize renames Namespace objects to the target namespace.
            r.doc["metadata"]["name"] = namespace
        elif r.doc["kind"] not in _CLUSTER_SCOPED:
            r.doc["metadata"]["namespace"] = namespace


def _add_labels(resources: list[_Resource], spec: Doc) -> None:
    unsupported = set(spec) - {"pairs", "includeTemplates", "includeSelectors"}
    if unsupported or spec.get("includeSelectors"):
        raise Unsupported("labels with includeSelectors or fields other than pairs")
    pairs: dict[str, str] = spec.get("pairs", {})
    for r in resources:
        meta = r.doc["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), **pairs}
        if spec.get("includeTemplates") and r.doc["kind"] in _TEMPLATED:
            template_meta = r.doc["spec"]["template"].setdefault("metadata", {})
            template_meta["labels"] = {**(template_meta.get("labels") or {}), **pairs}


def _set_replicas(resources: list[_Resource], spec: Doc) -> None:
    matches = [
        r
        for r in resources
        if r.doc["kind"] in _SCALABLE and r.doc["metadata"]["name"] == spec["name"]
    ]
    if not matches:
        raise RenderError(f"replicas: no workload named {spec['name']}")
    for r in matches:
        r.doc["spec"]["replicas"] = spec["count"]


def _containers(doc: Doc) -> Iterator[Doc]:
    pod = pod_spec(doc)
    if pod is not None:
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def pod_spec(doc: Doc) -> Doc | None:
    """The pod spec of a workload (Deployment, Job, ...) or Pod; None for other kinds."""
    if doc["kind"] == "Pod":
        return doc.get("spec")
    if doc["kind"] in _TEMPLATED:
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    if doc["kind"] == "CronJob":
        cron: Doc = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return cron
    return None


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    # A colon after the last slash separates the tag (a registry port comes before a slash).
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def _set_image(resources: list[_Resource], spec: Doc) -> None:
    unsupported = set(spec) - {"name", "newName", "newTag", "digest"}
    if unsupported:
        raise Unsupported(f"images fields {', '.join(sorted(unsupported))}")
    for r in resources:
        for container in _containers(r.doc):
            name, tag, digest = _split_image(container["image"])
            if name != spec["name"]:
                continue
            name = spec.get("newName", name)
            if "digest" in spec:
                container["image"] = f"{name}@{spec['digest']}"
            elif "newTag" in spec:
                container["image"] = f"{name}:{spec['newTag']}"
            else:
                container["image"] = (
                    name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                )


def _add_name_hashes(resources: list[_Resource]) -> None:
    renamed: dict[tuple[str, str, str], str] = {}
    for r in resources:
        if r.generated:
            kind, namespace, name = _identity(r.doc)
            new_name = f"{name}-{name_hash(r.doc)}"
            renamed[(kind, namespace, name)] = new_name
            r.doc["metadata"]["name"] = new_name
    for r in resources:
        pod = pod_spec(r.doc)
        if pod is not None:
            namespace = r.doc["metadata"].get("namespace", "")
            _rewrite_references(pod, namespace, renamed)


def _rewrite_references(pod: Doc, namespace: str, renamed: dict[tuple[str, str, str], str]) -> None:
    def rename(ref: Doc | None, kind: str, field: str = "name") -> None:
        if ref is not None and (kind, namespace, ref.get(field)) in renamed:
            ref[field] = renamed[(kind, namespace, ref[field])]

    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"), "ConfigMap")
            rename(source.get("secretRef"), "Secret")
        for var in container.get("env", []):
            value_from = var.get("valueFrom") or {}
            rename(value_from.get("configMapKeyRef"), "ConfigMap")
            rename(value_from.get("secretKeyRef"), "Secret")
    for volume in pod.get("volumes", []):
        rename(volume.get("configMap"), "ConfigMap")
        rename(volume.get("secret"), "Secret", "secretName")
        for source in (volume.get("projected") or {}).get("sources", []):
            rename(source.get("configMap"), "ConfigMap")
            rename(source.get("secret"), "Secret")
