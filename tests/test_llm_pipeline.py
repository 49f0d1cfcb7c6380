"""The LLM engine through the user's commands: `fraudgen llm train`, then `fraudgen generate --engine llm`
writes a normal batch (manifest, validation report) whose manifest reports validity and fallbacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_table


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(env or {})},
    )


def test_train_then_generate_a_batch_with_the_llm_engine(tmp_path: Path) -> None:
    reference = tmp_path / "reference.parquet"
    pq.write_table(generate_table(GenerationRequest(rows=12_000, seed=2, fraud_rate=0.3)), reference)
    env = {"FRAUDGEN_LLM_TRAIN_STEPS": "350", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    trained = _cli("llm", "train", "--data", str(reference), "--out", str(tmp_path / "model"), env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]

    out = tmp_path / "out"
    result = _cli("generate", "--rows", "4000", "--seed", "8", "--batch-id", "llm", "--engine", "llm",
                  "--model", str(tmp_path / "model"), "--out", str(out), "--shard-rows", "2000",
                  "--fraud-rate", "0.05", "--workers", "2", "--json", "--allow-failed", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    manifest = json.loads((out / "batch_id=llm" / "manifest.json").read_text())
    assert summary["rows"] == manifest["rows"] == 4000 and len(manifest["files"]) == 2
    assert manifest["llm"]["validity_rate"] >= 0.99 and manifest["llm"]["exact_copies"] == 0
    assert manifest["request"]["engine"] == "llm"
    table = pq.read_table(sorted((out / "batch_id=llm").glob("part-*.parquet")), partitioning=None)
    assert pc.sum(pc.equal(table.column("source"), "llm")).as_py() >= 0.95 * 4000
    assert (out / "batch_id=llm" / "report.html").is_file()


def test_llm_engine_needs_a_model_directory(tmp_path: Path) -> None:
    result = _cli("generate", "--rows", "10", "--engine", "llm", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--model" in result.stderr
    result = _cli("generate", "--rows", "10", "--engine", "llm", "--model", str(tmp_path / "nope"),
                  "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 2 and "--model" in result.stderr
