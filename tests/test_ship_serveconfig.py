"""serve_config.yaml is the one source of the RayService's serveConfigV2 (fraudgen.k8s render)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from fraudgen.k8s import (
    OVERRIDES_PATH,
    RAYSERVICE_PATH,
    SERVE_CONFIG_PATH,
    RenderError,
    embedded_serve_config,
    expected_serve_config,
    main,
    merge_overrides,
    render_file,
    render_rayservice,
)

SAMPLE = """\
# local config
proxy_location: EveryNode
http_options:
  host: 127.0.0.1
  port: 8000
applications:
  - name: fraudgen
    route_prefix: /
    import_path: deployments.app:build
    args: {max_rows: 100000}
    deployments:
      - name: ingress
        num_replicas: 2
        ray_actor_options: {num_cpus: 0.5}
      - name: generator
        ray_actor_options: {num_cpus: 0.25}
      - name: llm
        ray_actor_options: {num_cpus: 0.25}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    copy = tmp_path / "rayservice.yaml"
    shutil.copy(RAYSERVICE_PATH, copy)
    return copy


def test_render_embeds_the_serve_config_with_only_the_production_overrides(
    manifest: Path, tmp_path: Path
) -> None:
    serve_config = tmp_path / "serve_config.yaml"
    serve_config.write_text(SAMPLE, encoding="utf-8")
    before = manifest.read_text(encoding="utf-8")
    assert render_file(serve_config, manifest) is False  # stale, rewritten
    after = manifest.read_text(encoding="utf-8")
    embedded = embedded_serve_config(after)
    source = yaml.safe_load(SAMPLE)
    assert embedded["proxy_location"] == source["proxy_location"]
    assert embedded["http_options"] == {"host": "0.0.0.0", "port": 8000}
    app, original = embedded["applications"][0], source["applications"][0]
    assert app["import_path"] == original["import_path"] and app["route_prefix"] == "/"
    assert app["args"] == {
        "max_rows": 100000,
        "api_host": "0.0.0.0",
        "output_uri": "s3://fraudgen-data/batches",
    }
    ingress = app["deployments"][0]
    assert ingress["num_replicas"] == 2 and ingress["ray_actor_options"] == {"num_cpus": 1}
    assert embedded == merge_overrides(source, yaml.safe_load(OVERRIDES_PATH.read_text()))
    # the rest of the file (comments, the Ingress document) is untouched
    head = before.split("serveConfigV2:")[0]
    assert after.startswith(head)
    assert after.split("rayClusterConfig:")[1] == before.split("rayClusterConfig:")[1]
    assert [d["kind"] for d in yaml.safe_load_all(after)] == ["RayService", "Ingress"]
    # idempotent, and --check agrees
    assert render_file(serve_config, manifest, check=True) is True
    assert (
        main(["render", "--check", "--serve-config", str(serve_config), "--rayservice", str(manifest)]) == 0
    )


def test_check_reports_drift_without_writing(manifest: Path, tmp_path: Path) -> None:
    serve_config = tmp_path / "serve_config.yaml"
    serve_config.write_text(SAMPLE, encoding="utf-8")
    render_file(serve_config, manifest)
    serve_config.write_text(SAMPLE.replace("num_replicas: 2", "num_replicas: 3"), encoding="utf-8")
    frozen = manifest.read_text(encoding="utf-8")
    args = ["render", "--check", "--serve-config", str(serve_config), "--rayservice", str(manifest)]
    assert main(args) == 1
    assert manifest.read_text(encoding="utf-8") == frozen
    assert main(args[:1] + args[2:]) == 0
    assert (
        embedded_serve_config(manifest.read_text())["applications"][0]["deployments"][0]["num_replicas"] == 3
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("applications: []\n", "non-empty list"),
        ("- a\n", "top level must be a mapping"),
        ("applications:\n  - name: x\n", "applications[0] has no import_path"),
        ("applications: [\n", "not valid YAML"),
    ],
)
def test_bad_serve_configs_are_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(RenderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        render_rayservice(RAYSERVICE_PATH.read_text(), text)


def test_merge_is_by_name_and_rejects_overrides_for_unknown_entries() -> None:
    base = {"a": {"x": 1, "y": 2}, "applications": [{"name": "app", "deployments": [{"name": "d", "n": 1}]}]}
    merged = merge_overrides(
        base, {"a": {"y": 3}, "applications": [{"name": "app", "deployments": [{"name": "d", "n": 2}]}]}
    )
    assert merged == {
        "a": {"x": 1, "y": 3},
        "applications": [{"name": "app", "deployments": [{"name": "d", "n": 2}]}],
    }
    assert base["applications"][0]["deployments"][0]["n"] == 1, "the base is not mutated"
    with pytest.raises(RenderError, match="no entry named 'renamed'"):
        merge_overrides(base, {"applications": [{"name": "app", "deployments": [{"name": "renamed"}]}]})


def test_a_manifest_without_exactly_one_block_is_rejected() -> None:
    with pytest.raises(RenderError, match="exactly one"):
        render_rayservice("kind: RayService\nspec: {}\n", SAMPLE)


def test_missing_serve_config_is_a_usage_error(manifest: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["render", "--serve-config", str(missing), "--rayservice", str(manifest)]) == 2


@pytest.mark.skipif(
    not SERVE_CONFIG_PATH.is_file(), reason="serve_config.yaml (owned by the Serve API) does not exist yet"
)
def test_the_committed_rayservice_matches_serve_config_yaml() -> None:
    serve_text = SERVE_CONFIG_PATH.read_text(encoding="utf-8")
    assert embedded_serve_config(RAYSERVICE_PATH.read_text(encoding="utf-8")) == expected_serve_config(
        serve_text
    )
    assert render_file(check=True), (
        "ray_cluster/rayservice.yaml is stale: run `python -m fraudgen.k8s render`"
    )
