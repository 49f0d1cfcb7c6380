"""Validation as a stage: Ray Data on written Parquet agrees with in-process; report renders; CLI codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudgen.config import Settings
from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_table
from fraudgen.validate.command import validate_command
from fraudgen.validate.dataset import validate_dataset
from fraudgen.validate.report import write_report
from fraudgen.validate.stage import (
    GateConfig,
    evaluate,
    merge,
    summarise_block,
    validate_table,
    validate_table_with_summary,
)

REQUEST = GenerationRequest(rows=24_000, seed=5, shard_rows=8_000)
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def batch() -> pa.Table:
    return generate_table(REQUEST)


def write_batch(table: pa.Table, root: Path) -> Path:
    directory = root / "batch_id=test"
    directory.mkdir(parents=True)
    for i, start in enumerate(range(0, table.num_rows, 8_000)):
        pq.write_table(table.slice(start, 8_000), directory / f"part-{i:05d}.parquet")
    return directory


def test_merge_is_independent_of_block_boundaries(batch: pa.Table) -> None:
    whole = summarise_block(batch, None)
    pieces = merge(summarise_block(batch.slice(s, 5_000), None) for s in range(0, batch.num_rows, 5_000))
    assert pieces.rows == whole.rows
    for group, sample in whole.samples.items():
        assert np.array_equal(np.sort(sample["priority"]), np.sort(pieces.samples[group]["priority"]))
    a, b = evaluate(whole, GateConfig()), evaluate(pieces, GateConfig())
    assert a.passed == b.passed and a.metrics["rule_violations"] == b.metrics["rule_violations"] == 0


def test_ray_dataset_matches_in_process(ray_session: None, batch: pa.Table, tmp_path: Path) -> None:
    clean_dir = write_batch(batch, tmp_path / "clean")
    in_process = validate_table(batch)
    on_ray = validate_dataset(str(clean_dir), Settings(), use_ray=True)
    assert on_ray.passed == in_process.passed is True
    assert on_ray.rows == batch.num_rows
    broken = pa.concat_tables([batch, batch.slice(0, 10)])
    broken_dir = write_batch(broken, tmp_path / "broken")
    on_ray = validate_dataset(str(broken_dir), Settings(), use_ray=True)
    assert on_ray.passed == validate_table(broken).passed is False
    assert on_ray.dedup["duplicate_rows"] == 10 and {f.gate for f in on_ray.failures} == {"duplicates"}


def test_validate_command_exit_codes(
    batch: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings()
    directory = write_batch(batch, tmp_path / "ok")
    assert validate_command(str(directory), None, str(tmp_path / "report"), False, settings) == 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["passed"] is True
    bad = write_batch(pa.concat_tables([batch, batch.slice(0, 3)]), tmp_path / "bad")
    assert validate_command(str(bad), None, None, False, settings) == 1
    assert "FAIL duplicates" in capsys.readouterr().out
    assert validate_command(str(tmp_path / "missing"), None, None, False, settings) == 2
    assert validate_command(str(bad), None, None, True, settings) == 1
    assert json.loads(capsys.readouterr().out)["passed"] is False


def test_report_html_renders_in_headless_chromium(batch: pa.Table, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install -y chromium)")
    ts = batch.column("timestamp")
    broken = pa.concat_tables([batch, batch.slice(0, 5)])
    report, summary = validate_table_with_summary(broken, window=(REQUEST.start, REQUEST.end))
    assert not report.passed and ts is not None
    _, html = write_report(report, summary, tmp_path / "report")
    text = html.read_text()
    assert "FAILED" in text and "data:image/png;base64," in text and "<script" not in text
    png = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        html.as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 50_000
    shutil.rmtree(profile, ignore_errors=True)


def test_scenario_mix_gate_catches_a_wrong_mix_but_tolerates_case_granularity() -> None:
    from fraudgen.request import GenerationRequest
    from fraudgen.simulate.engine import generate_table
    from fraudgen.validate.stage import validate_table

    small = GenerationRequest(rows=3_000, seed=11)
    table = generate_table(small)
    window = (small.start, small.end)
    ok = validate_table(table, window=window, expected_fraud_rate=0.01, expected_mix=small.normalised_mix())
    assert "scenario_mix" not in {f.gate for f in ok.failures}
    big = GenerationRequest(rows=60_000, seed=11, fraud_rate=0.05)
    wrong = validate_table(generate_table(big), window=(big.start, big.end), expected_mix={"phishing": 1.0})
    assert "scenario_mix" in {f.gate for f in wrong.failures}
