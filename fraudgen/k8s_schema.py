"""Offline schema validation of the ``ray_cluster/`` manifests (no cluster, no kubectl, no network).

Two real schema sources, both strict (unknown fields are errors, as ``kubeconform -strict`` does):

* ``ray.io/v1`` kinds (RayCluster, RayJob, RayService): the ``openAPIV3Schema`` of KubeRay's own CRDs, copied
  from ray-project/kuberay v1.7.0 (``ray-operator/config/crd/bases/``, Apache-2.0) into
  ``ray_cluster/schemas/*.json.gz``. They embed the full Kubernetes PodTemplateSpec, so containers, env,
  ``secretKeyRef``, resources, volumes and tolerations are checked too. CEL rules
  (``x-kubernetes-validations``) are not evaluated: those need an API server.
* Kubernetes core kinds (Ingress, Service, ConfigMap, …) and every document's ``metadata`` (as ObjectMeta):
  the strict JSON schemas bundled in the ``kubernetes-validate`` package (dev extra) for
  :data:`K8S_VERSION`.

kubeconform itself is not installable from the registries this project uses; this is the same method (CRD
OpenAPI → strict JSON Schema → jsonschema) with the schemas pinned in the repository.
"""

from __future__ import annotations

import copy
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "ray_cluster" / "schemas"
#: Kubernetes minor version the core kinds are validated against
K8S_VERSION = "1.32"
#: KubeRay release the CRD schemas were copied from
KUBERAY_VERSION = "v1.7.0"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.v1.json.gz",
    "RayJob": "ray.io_rayjobs.v1.json.gz",
    "RayService": "ray.io_rayservices.v1.json.gz",
}


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 (Kubernetes structural) schema turned into a strict JSON Schema.

    Objects with ``properties`` reject unknown keys (the API server would silently prune them, which is how a
    typo such as ``minReplica`` ships unnoticed); ``x-kubernetes-int-or-string`` becomes integer|string;
    ``nullable`` admits null.
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """Validator for one ray.io/v1 kind, built from the pinned KubeRay CRD schema."""
    path = SCHEMA_DIR / CRD_FILES[kind]
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        document = json.load(handle)
    schema = strict_schema(copy.deepcopy(document["openAPIV3Schema"]))
    # metadata is declared as a bare object in CRDs; it is checked as ObjectMeta by validate_core instead
    schema["properties"]["metadata"] = {"type": "object"}
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return validator_cls(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<root>"


def validate_core(resource: dict[str, Any]) -> list[str]:
    """Errors of a core Kubernetes resource against kubernetes-validate's strict schema."""
    try:
        import kubernetes_validate
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "kubernetes-validate is needed to validate core Kubernetes kinds: pip install kubernetes-validate"
        ) from exc
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(exc)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"<root>: {exc.message}"]
    return []


def validate_resource(resource: dict[str, Any]) -> list[str]:
    """Every schema error of one manifest document (empty list when valid)."""
    if not isinstance(resource, dict) or "kind" not in resource or "apiVersion" not in resource:
        return ["<root>: not a Kubernetes object (apiVersion and kind are required)"]
    kind, api_version = resource["kind"], resource["apiVersion"]
    if str(api_version).startswith("ray.io/"):
        if api_version != "ray.io/v1" or kind not in CRD_FILES:
            return [f"apiVersion/kind: {api_version} {kind} is not a KubeRay v1 kind {sorted(CRD_FILES)}"]
        errors = sorted(crd_validator(kind).iter_errors(resource), key=lambda e: list(e.absolute_path))
        problems = [f"{_where(e)}: {e.message}" for e in errors]
        # ObjectMeta through the core schemas: an otherwise empty ConfigMap carrying the same metadata
        meta = resource.get("metadata")
        problems += validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
        return problems
    return validate_core(resource)


def validate_text(text: str, source: str) -> list[str]:
    """Errors of every document in a (multi-document) YAML text, each prefixed by source and object."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        return [f"{source}: not valid YAML ({exc})"]
    if not documents:
        return [f"{source}: no Kubernetes object found"]
    problems = []
    for index, doc in enumerate(documents):
        name = doc.get("metadata", {}).get("name", f"#{index}") if isinstance(doc, dict) else f"#{index}"
        kind = doc.get("kind", "?") if isinstance(doc, dict) else "?"
        problems += [f"{source}: {kind}/{name}: {problem}" for problem in validate_resource(doc)]
    return problems


def validate_paths(paths: list[Path]) -> list[str]:
    """Errors of every manifest file in ``paths``."""
    problems: list[str] = []
    for path in paths:
        problems += validate_text(path.read_text(encoding="utf-8"), str(path))
    return problems
