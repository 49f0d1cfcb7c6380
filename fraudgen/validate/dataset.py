"""Validation of written batches: a ``<root>/batch_id=<id>`` directory, a Parquet file, or the same on S3.

Files are split into work units of whole row groups; each unit is read and summarised where it runs (a Ray
Data task when Ray is up or the batch is large, else in-process), only the small summaries travel, and the
driver merges them and evaluates the gates exactly as for an in-memory table.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from fraudgen.schema import TRANSACTION_SCHEMA
from fraudgen.validate.gates import GateConfig, ValidationReport
from fraudgen.validate.stage import READ_BATCH_ROWS, evaluate, merge, report_only, summarise_block
from fraudgen.validate.summary import BlockSummary

log = structlog.get_logger(__name__)

#: above this many rows validate_dataset uses Ray Data (when Ray is not already initialised)
RAY_ROWS = 2_000_000
#: row groups larger than this are read in READ_BATCH_ROWS slices (memory stays bounded)
MAX_BLOCK_ROWS = 1_048_576
#: string columns read as Arrow dictionaries: Parquet stores them dictionary-encoded, so the reader skips
#: building one string per row, and the checks work on the few distinct values (enum and ISO checks, hashes)
DICTIONARY_COLUMNS = tuple(
    f.name
    for f in TRANSACTION_SCHEMA
    if pa.types.is_string(f.type) and f.name not in ("transaction_id", "signature")  # unique per row
)


def _resolve(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path in it): ``s3://bucket/key`` goes through the same S3 settings as the
    writer (AWS_* variables), so a batch written to S3 is validated where it lies."""
    if not path.startswith("s3://"):
        return None, path
    bucket_and_key = path.removeprefix("s3://")
    return _s3_filesystem(bucket_and_key.split("/", 1)[0]), bucket_and_key


@lru_cache(maxsize=8)
def _s3_filesystem(bucket: str) -> Any:
    """One pyarrow S3 filesystem per bucket and process (each file of a batch reuses it)."""
    from fraudgen.sinks.store import open_store

    fs, _ = open_store(f"s3://{bucket}").arrow_filesystem()
    return fs


def _row_count(path: str) -> int:
    fs, where = _resolve(path)
    return int(pq.read_metadata(where, filesystem=fs).num_rows)


def read_blocks(path: str, row_groups: Iterable[int] | None = None) -> Iterator[pa.Table]:
    """The blocks of one Parquet file (or of some of its row groups): one per row group, single-chunk
    columns, low-cardinality strings as dictionaries, read on the calling thread so a Ray task uses exactly
    the core it reserved."""
    fs, path = _resolve(path)
    schema = pq.read_schema(path, filesystem=fs)
    strings = [
        name
        for name in DICTIONARY_COLUMNS
        if name in schema.names
        and (pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type))
    ]
    parquet = pq.ParquetFile(path, read_dictionary=strings, filesystem=fs)
    if parquet.metadata.num_rows == 0:
        yield parquet.schema_arrow.empty_table()
        return
    for group in range(parquet.num_row_groups) if row_groups is None else row_groups:
        if parquet.metadata.row_group(group).num_rows <= MAX_BLOCK_ROWS:
            yield parquet.read_row_group(group, use_threads=False)
            continue
        for batch in parquet.iter_batches(READ_BATCH_ROWS, row_groups=[group], use_threads=False):
            yield pa.Table.from_batches([batch])


def summarise_file(
    path: str,
    window: tuple[datetime, datetime] | None,
    sample_size: int,
    row_groups: Iterable[int] | None = None,
) -> BlockSummary:
    """One merged summary of all blocks of a Parquet file (or of the given row groups)."""
    return merge(summarise_block(block, window, sample_size) for block in read_blocks(path, row_groups))


def work_units(files: list[str], rows_per_unit: int = READ_BATCH_ROWS) -> list[dict[str, Any]]:
    """Split files into units of consecutive row groups of about ``rows_per_unit`` rows (at least one group),
    so one big file still spreads over every core and many small row groups do not make many tiny tasks."""
    units: list[dict[str, Any]] = []
    for path in files:
        fs, where = _resolve(path)
        meta = pq.read_metadata(where, filesystem=fs)
        groups: list[int] = []
        rows = 0
        for group in range(meta.num_row_groups):
            groups.append(group)
            rows += meta.row_group(group).num_rows
            if rows >= rows_per_unit:
                units.append({"path": path, "row_groups": groups})
                groups, rows = [], 0
        if groups or meta.num_row_groups == 0:
            units.append({"path": path, "row_groups": groups or None})
    return units


def _batch_files(uri: str) -> tuple[list[str], dict[str, Any]]:
    """Parquet files of a batch directory or file, and its manifest.json (empty when absent)."""
    path = Path(uri)
    if uri.startswith("s3://"):
        return _s3_batch_files(uri.rstrip("/"))
    if not path.exists():
        raise FileNotFoundError(f"{uri}: no such file or directory")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{uri}: not a Parquet file")
        return [str(path)], {}
    files = sorted(str(p) for p in path.rglob("*.parquet"))
    if not files:
        raise ValueError(f"{uri}: no Parquet files (expected <root>/batch_id=<id>/part-*.parquet)")
    manifest: dict[str, Any] = {}
    if (path / "manifest.json").is_file():
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    return files, manifest


def _s3_batch_files(uri: str) -> tuple[list[str], dict[str, Any]]:
    from fraudgen.sinks.store import MANIFEST, StoreError, open_store

    store = open_store(uri)
    try:
        keys = store.list("")
        manifest = json.loads(store.read_bytes(MANIFEST)) if MANIFEST in keys else {}
    except StoreError as exc:
        raise ValueError(str(exc)) from exc
    files = [f"{uri}/{key}" for key in keys if key.endswith(".parquet")]
    if not files:
        raise ValueError(
            f"{uri}: no Parquet files (expected s3://bucket/prefix/batch_id=<id>/part-*.parquet)"
        )
    return files, manifest


def manifest_expectations(manifest: dict[str, Any]) -> dict[str, Any]:
    """Window, fraud rate and mix of the generation request recorded in a manifest (when present)."""
    nested = manifest.get("request")
    request: dict[str, Any] = nested if isinstance(nested, dict) else manifest
    out: dict[str, Any] = {}
    try:
        if request.get("start") and request.get("end"):
            out["window"] = (
                datetime.fromisoformat(str(request["start"]).replace("Z", "+00:00")),
                datetime.fromisoformat(str(request["end"]).replace("Z", "+00:00")),
            )
        if request.get("fraud_rate") is not None:
            out["expected_fraud_rate"] = float(request["fraud_rate"])
        if isinstance(request.get("scenario_mix"), dict):
            out["expected_mix"] = {str(k): float(v) for k, v in request["scenario_mix"].items()}
    except (TypeError, ValueError, AttributeError):
        return {}
    return out


def summarise_files(
    files: list[str], window: tuple[datetime, datetime] | None, gates: GateConfig, use_ray: bool | None = None
) -> BlockSummary:
    """Summaries of Parquet files: Ray Data blocks when Ray runs (or the batch is large), else in-process."""
    import ray

    rows = sum(_row_count(f) for f in files) if use_ray is None else 0
    if use_ray is None:
        use_ray = ray.is_initialized() or rows > RAY_ROWS
    if not use_ray:
        return merge(summarise_file(f, window, gates.sample_size) for f in files)
    from fraudgen.raylocal import init_ray

    init_ray()
    sample_size = gates.sample_size

    def summarise(batch: pa.Table) -> pa.Table:
        """One Ray Data task per work unit: read, check, summarise; only the summary leaves the worker."""
        blobs = [
            pickle.dumps(summarise_file(unit["path"], window, sample_size, unit["row_groups"]), protocol=5)
            for unit in batch.to_pylist()
        ]
        return pa.table({"summary": pa.array(blobs, pa.large_binary())})

    units = work_units(files)
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        summarise, batch_format="pyarrow", batch_size=1, num_cpus=1
    )
    summary = BlockSummary(sample_size=sample_size)
    pending: list[BlockSummary] = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        assert isinstance(batch, pa.Table)
        for blob in batch.column("summary").to_pylist():
            pending.append(pickle.loads(blob))
            if len(pending) >= 16:
                summary = merge([summary, *pending]) if summary.rows else merge(pending)
                pending = []
    if pending:
        summary = merge([summary, *pending]) if summary.rows else merge(pending)
    return summary


def validate_dataset_with_summary(
    uri: str,
    settings: Any = None,
    reference_uri: str | None = None,
    gates: GateConfig | None = None,
    use_ray: bool | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> tuple[ValidationReport, BlockSummary]:
    """Validate a written batch (``<root>/batch_id=<id>`` directory or Parquet file/directory), with the
    summary that ``write_report`` plots; :func:`validate_dataset` is the same without the summary."""
    if gates is None:
        gates = GateConfig.from_settings(settings) if settings is not None else GateConfig()
    files, manifest = _batch_files(uri)
    expected = manifest_expectations(manifest)
    window = expected.get("window")
    summary = summarise_files(files, window, gates, use_ray)
    reference = None
    if reference_uri is not None:
        ref_files, _ = _batch_files(reference_uri)
        reference = summarise_files(ref_files, window, gates, use_ray)
    log.info("validation.summarised", uri=uri, rows=summary.rows, blocks=summary.blocks)
    report = evaluate(
        summary,
        gates,
        reference,
        expected.get("expected_fraud_rate"),
        expected.get("expected_mix"),
        known_signatures=known_signatures,
    )
    return report, summary


validate_dataset = report_only(validate_dataset_with_summary)
