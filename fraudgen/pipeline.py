"""Ray Data orchestration: shard manifest → generate (+ per-block validation summary) → write → publish.

Each shard is one Ray Data block and one task: it generates its rows with its own seeds, summarises them
for validation, writes ``part-NNNNN.parquet`` (or ``.csv``) and returns only metadata, so memory stays
bounded by (workers × one shard) however many rows are asked for. The driver merges the summaries,
applies the validation gates, writes the report and ``manifest.json``, and publishes the batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import structlog
from pydantic import BaseModel

from fraudgen import __version__
from fraudgen.config import Settings
from fraudgen.request import GenerationRequest
from fraudgen.schema import SCHEMA_VERSION
from fraudgen.simulate.manifest import ShardSpec, build_manifest
from fraudgen.sinks.store import MANIFEST, Store, StoreError, batch_prefix, open_store

log = structlog.get_logger(__name__)

FileFormat = Literal["parquet", "csv"]


class BatchExistsError(StoreError):
    """The batch id is already published with different content."""


class GateFailedError(RuntimeError):
    """Validation gates failed; the batch was not published as complete."""

    def __init__(self, message: str, result: BatchResult) -> None:
        super().__init__(message)
        self.result = result


class FileEntry(BaseModel):
    path: str
    rows: int
    fraud_rows: int
    sha256: str
    bytes: int


class BatchResult(BaseModel):
    batch_id: str
    location: str
    manifest_uri: str
    rows: int
    fraud_rows: int
    files: list[FileEntry]
    batch_sha256: str
    seconds: float
    reused: bool = False
    published: bool = True
    validation: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None


def encode_table(table: pa.Table, fmt: FileFormat, compression: str = "snappy") -> bytes:
    """Serialise one shard. Options are fixed so that the same rows always give the same bytes."""
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink, compression=compression, row_group_size=128 * 1024, write_statistics=True)
    else:
        pacsv.write_csv(table, sink)
    return sink.getvalue()


class LlmOptions(BaseModel):
    """Which trained model (and LoRA adapter) generates the rows of an ``engine="llm"`` request."""

    model_dir: str
    adapter: str | None = None
    device: str | None = None
    torch_threads: int = 1


def generate_rows(
    request: GenerationRequest, spec: ShardSpec, llm: LlmOptions | None
) -> tuple[pa.Table, dict[str, Any] | None]:
    """One shard's rows from the engine the request names (the LLM engine reports validity/fallbacks)."""
    if request.engine == "rules":
        from fraudgen.simulate.engine import generate_shard

        return generate_shard(request, spec), None
    if llm is None:
        raise ValueError("engine llm: a model directory is required (--model or FRAUDGEN_LLM_MODEL_DIR)")
    import torch

    from fraudgen.llm.sample import get_engine

    if llm.torch_threads:
        torch.set_num_threads(llm.torch_threads)
    table, report = get_engine(llm.model_dir, llm.adapter, llm.device).generate_shard(request, spec)
    return table, report.model_dump(mode="json")


def write_shard(
    request: GenerationRequest,
    spec: ShardSpec,
    store: Store,
    prefix: str,
    fmt: FileFormat,
    compression: str,
    llm: LlmOptions | None = None,
) -> dict[str, Any]:
    """Generate, summarise and write one shard; returns its manifest entry and validation summary."""
    from fraudgen.validate.stage import summarise_block

    table, llm_report = generate_rows(request, spec, llm)
    summary = summarise_block(table, (request.start, request.end), seed=spec.index)
    data = encode_table(table, fmt, compression)
    name = f"{spec.name}.{fmt}"
    store.write_bytes(f"{prefix}/{name}", data)
    fraud_rows = int(pa.compute.sum(table.column("is_fraud")).as_py() or 0)
    entry = FileEntry(
        path=name,
        rows=table.num_rows,
        fraud_rows=fraud_rows,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
    )
    return {
        "index": spec.index,
        "entry": entry.model_dump_json(),
        "summary": pickle.dumps(summary),
        "llm": json.dumps(llm_report),
    }


def _shard_task(
    batch: dict[str, Any], request_json: str, uri: str, prefix: str, fmt: str, compression: str, llm_json: str
) -> dict:
    """Ray Data UDF: one batch holds one shard spec."""
    request = GenerationRequest.model_validate_json(request_json)
    store = open_store(uri)
    llm = LlmOptions.model_validate_json(llm_json) if llm_json else None
    results = [
        write_shard(request, ShardSpec.model_validate_json(str(spec)), store, prefix, fmt, compression, llm)  # type: ignore[arg-type]
        for spec in batch["spec"]
    ]
    return {key: [r[key] for r in results] for key in ("index", "entry", "summary", "llm")}


def batch_sha256(batch_id: str, rows: int, files: list[FileEntry]) -> str:
    """SHA256 over the canonical JSON of the manifest's content part (ids, counts, per-file hashes)."""
    body = {
        "batch_id": batch_id,
        "schema_version": SCHEMA_VERSION,
        "rows": rows,
        "files": [f.model_dump() for f in sorted(files, key=lambda f: f.path)],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(store: Store, batch_id: str) -> dict[str, Any] | None:
    key = f"{batch_prefix(batch_id)}/{MANIFEST}"
    if not store.exists(key):
        return None
    return dict(json.loads(store.read_bytes(key)))


def run_generation(
    request: GenerationRequest,
    settings: Settings,
    out_uri: str | None = None,
    fmt: FileFormat = "parquet",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_failed: bool = False,
    llm: LlmOptions | None = None,
) -> BatchResult:
    """Generate a whole batch with Ray Data (one task per shard) and publish it.

    With ``engine="llm"`` each task samples its shard from the model (loaded once per worker process and
    cached); on a cluster with GPUs every task takes one GPU.
    """
    import ray

    from fraudgen.raylocal import init_ray

    if request.engine == "llm" and llm is None:
        raise ValueError("engine llm: a model directory is required (--model or FRAUDGEN_LLM_MODEL_DIR)")
    started = time.perf_counter()
    store, final, reused = _prepare(request, settings, out_uri, fmt, started, llm)
    if reused is not None:
        return reused
    specs = build_manifest(request)
    init_ray(num_cpus=workers)
    parallelism = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    staging = store.staging_prefix(final)
    dataset = ray.data.from_items(
        [{"spec": spec.model_dump_json()} for spec in specs], override_num_blocks=len(specs)
    ).map_batches(
        _shard_task,  # type: ignore[arg-type]
        batch_size=1,
        compute=ray.data.TaskPoolStrategy(size=min(parallelism, len(specs))),
        num_cpus=1,
        num_gpus=1 if request.engine == "llm" and ray.available_resources().get("GPU", 0) >= 1 else 0,
        fn_kwargs={
            "request_json": request.model_dump_json(),
            "uri": store.root,
            "prefix": staging,
            "fmt": fmt,
            "compression": settings.parquet_compression,
            "llm_json": llm.model_dump_json() if llm else "",
        },
    )
    shards: list[dict[str, Any]] = []
    done = 0
    try:
        for row in dataset.iter_rows():
            shards.append({key: row[key] for key in ("index", "entry", "summary", "llm")})
            done += FileEntry.model_validate_json(row["entry"]).rows
            if progress:
                progress(done, request.rows)
    except Exception:
        if staging != final:
            store.delete_prefix(staging)
        raise
    return _finalize(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)


def generate_batch_inprocess(
    request: GenerationRequest,
    settings: Settings,
    out_uri: str | None = None,
    fmt: FileFormat = "parquet",
    allow_failed: bool = False,
    llm: LlmOptions | None = None,
) -> BatchResult:
    """The same batch without Ray: for API-sized requests (≤ 100k rows) where task start-up would dominate."""
    started = time.perf_counter()
    store, final, reused = _prepare(request, settings, out_uri, fmt, started, llm)
    if reused is not None:
        return reused
    staging = store.staging_prefix(final)
    try:
        shards = [
            write_shard(request, spec, store, staging, fmt, settings.parquet_compression, llm)
            for spec in build_manifest(request)
        ]
    except Exception:
        if staging != final:
            store.delete_prefix(staging)
        raise
    return _finalize(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)


def batch_fingerprint(request: GenerationRequest, llm: LlmOptions | None) -> str:
    """The identity of a batch's content: the request, plus the model and adapter for the LLM engine."""
    if request.engine != "llm" or llm is None:
        return request.fingerprint()
    model = {"model_dir": llm.model_dir, "adapter": llm.adapter}
    return hashlib.sha256(f"{request.fingerprint()}|{json.dumps(model, sort_keys=True)}".encode()).hexdigest()


def _prepare(
    request: GenerationRequest,
    settings: Settings,
    out_uri: str | None,
    fmt: FileFormat,
    started: float,
    llm: LlmOptions | None = None,
) -> tuple[Store, str, BatchResult | None]:
    """Open and check the output; return the existing result when the same batch is already published."""
    store = open_store(out_uri or settings.output_uri)
    store.check_writable()
    batch_id = request.resolved_batch_id
    final = batch_prefix(batch_id)
    existing = read_manifest(store, batch_id)
    if existing is None:
        return store, final, None
    if existing.get("fingerprint") != batch_fingerprint(request, llm) or existing.get("format") != fmt:
        where = store.uri(final)
        raise BatchExistsError(f"batch_id {batch_id!r} already exists at {where} with other content")
    log.info("batch already published; reusing it", batch_id=batch_id)
    return store, final, _result_from_manifest(store, existing, time.perf_counter() - started)


def _finalize(
    store: Store,
    staging: str,
    final: str,
    request: GenerationRequest,
    fmt: FileFormat,
    shards: list[dict[str, Any]],
    settings: Settings,
    allow_failed: bool,
    started: float,
    llm: LlmOptions | None = None,
) -> BatchResult:
    """Merge shard summaries, apply the gates, write report and manifest, publish (or quarantine)."""
    from fraudgen.validate.report import write_report
    from fraudgen.validate.stage import GateConfig, evaluate, merge

    shards = sorted(shards, key=lambda shard: int(shard["index"]))
    files = [FileEntry.model_validate_json(shard["entry"]) for shard in shards]
    batch_id = request.resolved_batch_id
    rows = sum(f.rows for f in files)
    if rows != request.rows:
        raise RuntimeError(f"shards produced {rows} rows, expected {request.rows}")
    fraud_rows = sum(f.fraud_rows for f in files)
    summary = merge(pickle.loads(shard["summary"]) for shard in shards)
    report = evaluate(
        summary,
        GateConfig.from_settings(settings),
        expected_fraud_rate=request.fraud_rate,
        expected_mix=request.normalised_mix() or None,
    )
    _write_report_files(store, staging, report, summary, write_report)
    digest = batch_sha256(batch_id, rows, files)
    manifest = {
        "batch_id": batch_id,
        "tenant_id": request.tenant_id,
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "rows": rows,
        "fraud_rows": fraud_rows,
        "files": [f.model_dump() for f in files],
        "batch_sha256": digest,
        "fingerprint": batch_fingerprint(request, llm),
        "request": request.model_dump(mode="json"),
        "generator": f"fraudgen {__version__}",
        "validation": {"passed": report.passed, "failures": [f.model_dump() for f in report.failures]},
    }
    llm_reports = [json.loads(shard["llm"]) for shard in shards if shard.get("llm") not in (None, "null")]
    if llm_reports:
        manifest["llm"] = _merge_llm_reports(llm_reports)
    publish = report.passed or allow_failed
    target = final if publish else f"_failed/{final}"
    if not publish and staging == final:
        # S3 has no rename: a failed batch keeps its parts but gets no manifest.json (never looks complete)
        store.write_bytes(f"{staging}/FAILED.json", json.dumps(manifest, indent=2).encode())
    else:
        store.write_bytes(f"{staging}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
        store.publish(staging, target)
    result = BatchResult(
        batch_id=batch_id,
        location=store.uri(target),
        manifest_uri=store.uri(f"{target}/{MANIFEST}"),
        rows=rows,
        fraud_rows=fraud_rows,
        files=files,
        batch_sha256=digest,
        seconds=time.perf_counter() - started,
        published=publish,
        validation=json.loads(report.to_json()),
        llm=manifest.get("llm"),
    )
    log.info("batch written", batch_id=batch_id, rows=rows, location=result.location, passed=report.passed)
    if not publish:
        reasons = "; ".join(f.message for f in report.failures)
        raise GateFailedError(f"validation gates failed for batch {batch_id}: {reasons}", result)
    return result


def _merge_llm_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Validity before fallback, fallbacks by reason and copies over the whole batch."""
    from fraudgen.llm.sample import LlmReport

    merged = LlmReport.model_validate(reports[0])
    for report in reports[1:]:
        merged = merged.merge(LlmReport.model_validate(report))
    return merged.model_dump(mode="json")


def _write_report_files(store: Store, prefix: str, report: Any, summary: Any, write_report: Any) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="fraudgen-report-") as tmp:
        for path in write_report(report, summary, tmp):
            store.write_bytes(f"{prefix}/{Path(path).name}", Path(path).read_bytes())


def _result_from_manifest(store: Store, manifest: dict[str, Any], seconds: float) -> BatchResult:
    prefix = batch_prefix(manifest["batch_id"])
    return BatchResult(
        batch_id=manifest["batch_id"],
        location=store.uri(prefix),
        manifest_uri=store.uri(f"{prefix}/{MANIFEST}"),
        rows=manifest["rows"],
        fraud_rows=manifest["fraud_rows"],
        files=[FileEntry.model_validate(f) for f in manifest["files"]],
        batch_sha256=manifest["batch_sha256"],
        seconds=seconds,
        reused=True,
        validation=manifest.get("validation"),
    )


def export_table(
    request: GenerationRequest,
    table: pa.Table,
    settings: Settings,
    out_uri: str | None = None,
    fmt: FileFormat = "parquet",
    allow_failed: bool = False,
    llm: LlmOptions | None = None,
    llm_report: dict[str, Any] | None = None,
) -> BatchResult:
    """Write rows generated elsewhere (e.g. by the LLM Serve deployment) as a batch, exactly like
    :func:`generate_batch_inprocess`: one part per shard of the request's manifest (the table is sliced by
    shard size, in manifest order, as ``generate_llm_table`` concatenates it), per-part validation
    summaries, gates, report, ``manifest.json`` and publication (or quarantine). ``llm`` names the model
    and adapter (they are part of the batch fingerprint); ``llm_report`` lands in the manifest."""
    from fraudgen.validate.stage import summarise_block

    started = time.perf_counter()
    if table.num_rows != request.rows:
        raise ValueError(f"table has {table.num_rows} rows, the request asks for {request.rows}")
    store, final, reused = _prepare(request, settings, out_uri, fmt, started, llm)
    if reused is not None:
        return reused
    staging = store.staging_prefix(final)
    shards: list[dict[str, Any]] = []
    try:
        offset = 0
        for spec in build_manifest(request):
            part = table.slice(offset, spec.rows)
            offset += spec.rows
            data = encode_table(part, fmt, settings.parquet_compression)
            name = f"{spec.name}.{fmt}"
            store.write_bytes(f"{staging}/{name}", data)
            entry = FileEntry(
                path=name,
                rows=part.num_rows,
                fraud_rows=int(pa.compute.sum(part.column("is_fraud")).as_py() or 0),
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
            )
            summary = summarise_block(part, (request.start, request.end), seed=spec.index)
            report = llm_report if not shards else None  # the whole table's report, carried once
            shards.append(
                {"index": spec.index, "entry": entry.model_dump_json(), "summary": pickle.dumps(summary),
                 "llm": json.dumps(report)}
            )  # fmt: skip
    except Exception:
        if staging != final:
            store.delete_prefix(staging)
        raise
    return _finalize(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)
