"""The `fraudgen` command as a user runs it: a real subprocess, real exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fraudgen.schema import Transaction

FRAUDGEN = [sys.executable, "-m", "fraudgen.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: int = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FRAUDGEN, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rows", "0"], "--rows"),
        (["--rows", "10", "--fraud-rate", "1.5"], "--fraud-rate"),
        (["--rows", "10", "--fraud-rate", "-0.1"], "--fraud-rate"),
        (["--rows", "10", "--scenarios", "card_testing=1,bank_robbery=2"], "bank_robbery"),
        (["--rows", "10", "--start", "2026-02-01", "--end", "2026-01-01"], "must be after start"),
        (["--rows", "10", "--start", "yesterday"], "--start"),
        (["--rows", "10", "--format", "xlsx"], "--format"),
        (["--rows", "10", "--currency", "XXX"], "--currency"),
        (["--rows", "10", "--sink", "ftp"], "--sink"),
    ],
)
def test_generate_rejects_bad_input_with_exit_2_naming_the_field(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    result = run("generate", "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("manifest.json"))


def test_generate_rejects_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run("generate", "--rows", "100", "--out", str(blocker / "out"))
    assert result.returncode == 2
    assert "--out" in result.stderr and "not writable" in result.stderr


def test_errors_are_one_unwrapped_line_and_never_read_as_markup(tmp_path: Path) -> None:
    blocker = tmp_path / "[bold]file"
    blocker.write_text("not a directory")
    target = blocker / ("deep-" * 30) / "out"  # far wider than any terminal
    result = run("generate", "--rows", "100", "--out", str(target))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --out:") and str(target) in lines[0] and "not writable" in lines[0]


def test_preview_prints_valid_contract_rows_as_json() -> None:
    result = run("preview", "--rows", "25", "--seed", "3", "--fraud-rate", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    rows = [Transaction.model_validate(json.loads(line)) for line in result.stdout.splitlines()]
    assert len(rows) == 25
    assert any(r.is_fraud for r in rows)
    assert all(r.signature == r.expected_signature() for r in rows)


def test_preview_table_and_limits() -> None:
    table = run("preview", "--rows", "5")
    assert table.returncode == 0 and "transaction_type" in table.stdout
    too_many = run("preview", "--rows", "100000")
    assert too_many.returncode == 2 and "--rows" in too_many.stderr


def test_generate_end_to_end_with_embedded_ray(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"RAY_ADDRESS": ""}
    result = run("generate", "--rows", "30000", "--seed", "5", "--batch-id", "cli", "--out", str(out),
                 "--json", "--workers", "2", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rows"] == 30000 and summary["batch_id"] == "cli"
    manifest = json.loads((out / "batch_id=cli" / "manifest.json").read_text())
    assert manifest["batch_sha256"] == summary["batch_sha256"]
    assert (out / "batch_id=cli" / "report.html").is_file()
    again = run("validate", str(out / "batch_id=cli"), "--json")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
