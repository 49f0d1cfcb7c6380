"""The Ray Data pipeline: layout, manifest, determinism across parallelism, idempotence, publication."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from fraudgen.config import Settings
from fraudgen.pipeline import BatchExistsError, batch_sha256, run_generation
from fraudgen.request import GenerationRequest
from fraudgen.schema import TRANSACTION_SCHEMA
from fraudgen.sinks.store import StoreError

pytestmark = pytest.mark.usefixtures("ray_session")


def _request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"rows": 60_000, "seed": 11, "batch_id": "pipe", "shard_rows": 15_000}
    fields.update(overrides)
    return GenerationRequest.model_validate(fields)


def _file_hashes(batch_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(batch_dir.glob("part-*"))}


def test_layout_manifest_and_contract(tmp_path: Path) -> None:
    result = run_generation(_request(), Settings(), out_uri=str(tmp_path), workers=2)
    batch = tmp_path / "batch_id=pipe"
    manifest = json.loads((batch / "manifest.json").read_text())
    assert result.rows == manifest["rows"] == 60_000
    assert [f["path"] for f in manifest["files"]] == [f"part-{i:05d}.parquet" for i in range(4)]
    for entry in manifest["files"]:
        data = (batch / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        table = pq.read_table(batch / entry["path"])
        assert table.num_rows == entry["rows"]
        assert table.schema.equals(TRANSACTION_SCHEMA, check_metadata=False)
    from fraudgen.pipeline import FileEntry

    files = [FileEntry.model_validate(f) for f in manifest["files"]]
    assert manifest["batch_sha256"] == batch_sha256("pipe", 60_000, files) == result.batch_sha256
    assert (batch / "report.json").is_file() and (batch / "report.html").is_file()
    assert not list(tmp_path.glob(".staging/*")), "staging leftovers after a successful publish"
    parts = sorted(batch.glob("part-*.parquet"))
    ids = pq.read_table(parts, columns=["transaction_id"], partitioning=None).column("transaction_id")
    assert len(set(ids.to_pylist())) == 60_000


def test_identical_bytes_whatever_the_parallelism(tmp_path: Path) -> None:
    one = run_generation(_request(), Settings(), out_uri=str(tmp_path / "w1"), workers=1)
    two = run_generation(_request(), Settings(), out_uri=str(tmp_path / "w2"), workers=2)
    assert one.batch_sha256 == two.batch_sha256
    assert _file_hashes(tmp_path / "w1" / "batch_id=pipe") == _file_hashes(tmp_path / "w2" / "batch_id=pipe")
    other_seed = run_generation(_request(seed=12), Settings(), out_uri=str(tmp_path / "w3"), workers=2)
    assert other_seed.batch_sha256 != one.batch_sha256


def test_rerun_is_idempotent_and_conflicts_are_refused(tmp_path: Path) -> None:
    first = run_generation(_request(rows=20_000), Settings(), out_uri=str(tmp_path))
    again = run_generation(_request(rows=20_000), Settings(), out_uri=str(tmp_path))
    assert again.reused and again.batch_sha256 == first.batch_sha256
    with pytest.raises(BatchExistsError, match="pipe"):
        run_generation(_request(rows=20_000, seed=99), Settings(), out_uri=str(tmp_path))


def test_csv_format(tmp_path: Path) -> None:
    result = run_generation(
        _request(rows=16_000, batch_id="csv"), Settings(), out_uri=str(tmp_path), fmt="csv"
    )
    files = sorted((tmp_path / "batch_id=csv").glob("part-*.csv"))
    assert [f.name for f in files] == ["part-00000.csv", "part-00001.csv"]
    total = sum(pacsv.read_csv(f).num_rows for f in files)
    assert total == result.rows == 16_000


def test_unwritable_output_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        run_generation(_request(rows=1_000), Settings(), out_uri=str(blocker / "sub"))


def test_read_batch_returns_the_published_rows_and_detects_tampering(tmp_path: Path) -> None:
    from fraudgen import read_batch
    from fraudgen.simulate.engine import generate_table

    request = _request(rows=30_000, batch_id="readback")
    run_generation(request, Settings(), out_uri=str(tmp_path))
    table = read_batch(str(tmp_path / "batch_id=readback"))
    assert table.equals(generate_table(request))
    part = tmp_path / "batch_id=readback" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(StoreError, match="SHA256"):
        read_batch(str(tmp_path / "batch_id=readback"))
    with pytest.raises(StoreError, match="not a published batch"):
        read_batch(str(tmp_path / "batch_id=never-written"))
