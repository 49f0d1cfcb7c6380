"""KubeRay manifests: valid against KubeRay's CRDs and Kubernetes' schemas, shaped as DESIGN.md asks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudgen.config import Settings
from fraudgen.k8s_schema import validate_paths, validate_text

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = {name: ROOT / "ray_cluster" / f"{name}.yaml" for name in ("rayservice", "rayjob", "raycluster")}
SECRET_LIKE = re.compile(r"POSTGRES|KAFKA|HMAC|AWS_ACCESS|AWS_SECRET|PASSWORD|TOKEN|DSN", re.IGNORECASE)

pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) validates core kinds")


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS[name].read_text(encoding="utf-8")) if d]


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return {"RayService": lambda: spec["rayClusterConfig"], "RayJob": lambda: spec["rayClusterSpec"]}.get(
        doc["kind"], lambda: spec
    )()


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = ray_cluster_spec(doc)
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        templates.append(doc["spec"]["submitterPodTemplate"])
    return [c for t in templates for c in t["spec"]["containers"]]


def test_every_manifest_is_valid_against_the_pinned_schemas() -> None:
    assert validate_paths(list(MANIFESTS.values())) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("minReplicas: 1\n", "minReplica: 1\n", "'minReplica' was unexpected"),
        ("memory: 16Gi", "memory: 16 gigabytes", "does not match"),
        ("enableInTreeAutoscaling: true", "enableInTreeAutoscaling: sure", "is not of type 'boolean'"),
        ("key: dsn }", "kee: dsn }", "'kee' was unexpected"),
        ("pathType: Prefix", "pathType: Prefix\n            weight: 3", "'weight' was unexpected"),
        ("kind: RayService", "kind: RayServices", "not a KubeRay v1 kind"),
    ],
)
def test_the_validator_rejects_broken_manifests(old: str, new: str, expected: str) -> None:
    text = MANIFESTS["rayservice"].read_text(encoding="utf-8")
    assert old in text
    problems = validate_text(text.replace(old, new, 1), "rayservice.yaml")
    assert any(expected in p for p in problems), problems


def test_kinds_and_api_versions() -> None:
    assert [(d["apiVersion"], d["kind"]) for d in docs("rayservice")] == [
        ("ray.io/v1", "RayService"),
        ("networking.k8s.io/v1", "Ingress"),
    ]
    assert [(d["apiVersion"], d["kind"]) for d in docs("rayjob")] == [("ray.io/v1", "RayJob")]
    assert [(d["apiVersion"], d["kind"]) for d in docs("raycluster")] == [("ray.io/v1", "RayCluster")]


@pytest.mark.parametrize("name", ["rayservice", "raycluster"])
def test_cpu_head_cpu_workers_gpu_workers_and_autoscaling(name: str) -> None:
    cluster = ray_cluster_spec(docs(name)[0])
    assert cluster["enableInTreeAutoscaling"] is True
    assert "nvidia.com/gpu" not in str(cluster["headGroupSpec"])
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    cpu_limits = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits
    assert gpu_limits["nvidia.com/gpu"] >= 1
    assert groups["gpu"]["template"]["spec"]["containers"][0]["image"].endswith("-cuda")
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert groups["gpu"]["minReplicas"] == 0, "GPU nodes must scale from zero"


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_container_sets_requests_and_limits(name: str) -> None:
    for doc in docs(name):
        if not doc["apiVersion"].startswith("ray.io/"):
            continue
        resources = [c["resources"] for c in containers(doc)]
        resources.append(ray_cluster_spec(doc)["autoscalerOptions"]["resources"])
        for res in resources:
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), res


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_secrets_come_only_from_secret_references(name: str) -> None:
    text = MANIFESTS[name].read_text(encoding="utf-8")
    assert "kind: Secret" not in text, "Secret values never live in the manifests"
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), "credentials embedded in a URI"
    settings_fields = set(Settings.model_fields)
    for doc in docs(name):
        if not doc["apiVersion"].startswith("ray.io/"):
            continue
        for container in containers(doc):
            for env in container.get("env", []):
                if env["name"].startswith("FRAUDGEN_"):
                    assert env["name"].removeprefix("FRAUDGEN_").lower() in settings_fields, env["name"]
                if SECRET_LIKE.search(env["name"]):
                    assert "value" not in env, f"{env['name']} must come from a Secret"
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, env


def test_workers_and_head_get_the_service_settings() -> None:
    for name in MANIFESTS:
        for doc in docs(name):
            if doc["kind"] == "Ingress":
                continue
            cluster = ray_cluster_spec(doc)
            pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
            for pod in pods:
                env = {e["name"] for e in pod["template"]["spec"]["containers"][0]["env"]}
                assert {
                    "FRAUDGEN_POSTGRES_DSN",
                    "FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS",
                    "AWS_SECRET_ACCESS_KEY",
                } <= env


def test_ingress_is_tls_only_and_rate_limited_to_100_per_minute() -> None:
    service, ingress = docs("rayservice")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rpm"] == "100"
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    assert all(h.endswith(".example.com") for h in hosts)
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    # KubeRay names the Serve service <RayService name>-serve-svc and exposes Serve's port 8000
    assert backend == {"name": f"{service['metadata']['name']}-serve-svc", "port": {"number": 8000}}
    head_env = {e["name"]: e.get("value") for e in containers(service)[0]["env"]}
    assert head_env["FRAUDGEN_RATE_LIMIT_PER_MINUTE"] == "100"


def test_rayjob_runs_fraudgen_generate_to_s3_with_flags_the_cli_accepts() -> None:
    import typer.main

    from fraudgen.cli import app

    (job,) = docs("rayjob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["fraudgen", "generate"]
    options = {o for p in typer.main.get_command(app).commands["generate"].params for o in p.opts}  # type: ignore[attr-defined]
    flags = [a for a in argv[2:] if a.startswith("--")]
    assert set(flags) <= options, set(flags) - options
    assert argv[argv.index("--out") + 1].startswith("s3://")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_images_and_ray_version_match_the_package() -> None:
    import ray

    for name in MANIFESTS:
        for doc in docs(name):
            if not doc["apiVersion"].startswith("ray.io/"):
                continue
            assert ray_cluster_spec(doc)["rayVersion"] == ray.__version__
            for container in containers(doc):
                assert re.fullmatch(
                    r"registry\.example\.com/fraudgen:\d+\.\d+\.\d+(-cuda)?", container["image"]
                )
