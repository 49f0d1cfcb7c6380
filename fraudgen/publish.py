"""How a written batch becomes visible: manifest, hashes, gates, report, then publication or quarantine.

Every way of writing a batch (Ray Data tasks, in process, rows exported from the LLM deployment) ends
here, so the rules are one: the shards' validation summaries are merged and gated, the report and
``manifest.json`` (per-file SHA256 and the batch SHA256) are written last, and only a batch that passed
(or was allowed to fail) is published; a failed one is quarantined under ``_failed/`` and never looks
complete. A batch id already published with the same content is reused, with other content refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from pydantic import BaseModel

from fraudgen import __version__
from fraudgen.config import Settings
from fraudgen.request import GenerationRequest
from fraudgen.schema import SCHEMA_VERSION
from fraudgen.sinks.store import MANIFEST, Store, StoreError, batch_prefix, open_store

if TYPE_CHECKING:
    from fraudgen.pipeline import LlmOptions

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


def shard_record(
    index: int, name: str, part: pa.Table, data: bytes, summary: Any, llm_report: dict[str, Any] | None
) -> dict[str, Any]:
    """What one written part hands to :func:`finalize_batch`: its manifest entry (rows, fraud rows, SHA256
    of the exact bytes written), its validation summary and the LLM report it carries, if any."""
    entry = FileEntry(
        path=name,
        rows=part.num_rows,
        fraud_rows=int(pc.sum(part.column("is_fraud")).as_py() or 0),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
    )
    return {
        "index": index,
        "entry": entry.model_dump_json(),
        "summary": pickle.dumps(summary),
        "llm": json.dumps(llm_report),
    }


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


def batch_fingerprint(request: GenerationRequest, llm: LlmOptions | None) -> str:
    """The identity of a batch's content: the request, plus the model and adapter for the LLM engine."""
    if request.engine != "llm" or llm is None:
        return request.fingerprint()
    model = {"model_dir": llm.model_dir, "adapter": llm.adapter}
    return hashlib.sha256(f"{request.fingerprint()}|{json.dumps(model, sort_keys=True)}".encode()).hexdigest()


def prepare_output(
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


def finalize_batch(
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
