"""Ray Data orchestration: shard manifest → generate (+ per-block validation summary) → write → publish.

Each shard is one Ray Data block and one task: it generates its rows with its own seeds, summarises them
for validation, writes ``part-NNNNN.parquet`` (or ``.csv``) and returns only metadata, so memory stays
bounded by (workers × one shard) however many rows are asked for. The driver merges the summaries,
applies the validation gates, writes the report and ``manifest.json``, and publishes the batch: those
rules, shared with in-process and exported batches, live in :mod:`fraudgen.publish`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel

from fraudgen.config import Settings

# the batch models and publication rules live in fraudgen.publish; these names stay importable from here
from fraudgen.publish import (
    BatchExistsError,
    BatchResult,
    FileEntry,
    FileFormat,
    GateFailedError,
    batch_fingerprint,
    batch_sha256,
    finalize_batch,
    prepare_output,
    read_manifest,
    shard_record,
)
from fraudgen.request import GenerationRequest
from fraudgen.simulate.manifest import ShardSpec, build_manifest
from fraudgen.sinks.store import Store, open_store

__all__ = [
    "BatchExistsError",
    "BatchResult",
    "FileEntry",
    "FileFormat",
    "GateFailedError",
    "LlmOptions",
    "batch_fingerprint",
    "batch_sha256",
    "encode_table",
    "export_table",
    "generate_batch_inprocess",
    "read_manifest",
    "run_generation",
    "store_shard",
    "write_shard",
]


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
    table, llm_report = generate_rows(request, spec, llm)
    return store_shard(table, request, spec, store, prefix, fmt, compression, llm_report)


def store_shard(
    table: pa.Table,
    request: GenerationRequest,
    spec: ShardSpec,
    store: Store,
    prefix: str,
    fmt: FileFormat,
    compression: str,
    llm_report: dict[str, Any] | None,
) -> dict[str, Any]:
    """Summarise and write one shard's rows, however they were made (generated here or handed in)."""
    from fraudgen.validate.stage import summarise_block

    summary = summarise_block(table, (request.start, request.end), seed=spec.index)
    data = encode_table(table, fmt, compression)
    name = f"{spec.name}.{fmt}"
    store.write_bytes(f"{prefix}/{name}", data)
    return shard_record(spec.index, name, table, data, summary, llm_report)


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
    store, final, reused = prepare_output(request, settings, out_uri, fmt, started, llm)
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
    return finalize_batch(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)


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
    store, final, reused = prepare_output(request, settings, out_uri, fmt, started, llm)
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
    return finalize_batch(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)


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
    started = time.perf_counter()
    if table.num_rows != request.rows:
        raise ValueError(f"table has {table.num_rows} rows, the request asks for {request.rows}")
    store, final, reused = prepare_output(request, settings, out_uri, fmt, started, llm)
    if reused is not None:
        return reused
    staging = store.staging_prefix(final)
    shards: list[dict[str, Any]] = []
    try:
        offset = 0
        for spec in build_manifest(request):
            part = table.slice(offset, spec.rows)
            offset += spec.rows
            report = llm_report if not shards else None  # the whole table's report, carried once
            shards.append(
                store_shard(part, request, spec, store, staging, fmt, settings.parquet_compression, report)
            )
    except Exception:
        if staging != final:
            store.delete_prefix(staging)
        raise
    return finalize_batch(store, staging, final, request, fmt, shards, settings, allow_failed, started, llm)
