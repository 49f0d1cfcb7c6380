"""The work behind the API: preview, generate + validate + export, batch status, readiness, idempotency
records, request audit events and the start of background persistence.

One plain class (``GeneratorService``) with blocking methods that return ``Outcome`` (status, body,
headers) instead of raising, so the same code runs in-process under a test client and inside the Serve
generator deployment, where exceptions would cross a process boundary. Idempotency records live in the
output store (``_idempotency/<sha256>.json``), so a replay works on any replica and after restarts.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from fraudgen.config import Settings
from fraudgen.request import GenerationRequest
from fraudgen.sinks.store import StoreError, batch_prefix, open_store

log = structlog.get_logger(__name__)
IDEMPOTENCY_PREFIX = "_idempotency"
PERSIST_SINKS = ("postgres", "kafka")


def public_llm_report(report: dict[str, Any]) -> dict[str, Any]:
    """The part of an LLM sampling report that API answers show (:data:`LLM_REPORT_FIELDS`)."""
    return {k: v for k, v in report.items() if k in LLM_REPORT_FIELDS}


@dataclass(frozen=True)
class GenerateCall:
    """One accepted ``POST /v1/generator/generate`` as every backend layer hands it on (the app, the local
    and Serve backends, the generator deployment): one value to pass, picklable for Serve handles."""

    request_json: str
    fmt: str
    sinks: list[str] | None
    allow_failed: bool
    audit: dict[str, Any]
    adapter: str | None = None


@dataclass
class Outcome:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, **extra: Any) -> Outcome:
    return Outcome(status, {"detail": message, **extra})


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def table_json(table: Any) -> list[dict[str, Any]]:
    """Contract rows as dicts; the app renders them with orjson (amount as a decimal string, RFC 3339)."""
    return table.to_pylist()


#: LlmReport fields an API answer carries (the full report stays in the replica's log)
LLM_REPORT_FIELDS = {"validity_rate", "llm_rows", "fallback_rows", "fallback_by_reason", "adapter"}
LLM_MODEL_SETTINGS = "FRAUDGEN_API_LLM_MODEL_DIR or FRAUDGEN_LLM_MODEL_DIR"


def resolve_llm_model_dir(settings: Settings) -> Path | None:
    """The API's LLM model: ``api_llm_model_dir``, else the library's ``llm_model_dir`` (both names work)."""
    if settings.api_llm_model_dir is not None:
        return settings.api_llm_model_dir
    return Path(settings.llm_model_dir) if settings.llm_model_dir else None


def without_llm_model(settings: Settings) -> Settings:
    """The same settings with no LLM model: for processes that must not load one (ingress, generator
    when the dedicated LLM deployment serves engine=llm)."""
    return settings.model_copy(update={"api_llm_model_dir": None, "llm_model_dir": None})


def preview_body(request: GenerationRequest, table: pa.Table, **extra: Any) -> dict[str, Any]:
    """The preview answer, whichever process (ingress, generator, LLM replica) produced the rows."""
    return {
        "count": table.num_rows,
        "seed": request.seed,
        "engine": request.engine,
        "fraud_rows": int(pc.sum(table.column("is_fraud")).as_py() or 0),
        "transactions": table_json(table),
        **extra,
    }


class GeneratorService:
    """Blocking operations; one instance per process (replica), holding the LLM model once loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings.output_uri)
        self.llm_error: str | None = None
        self._llm_loaded = False
        self.llm_model_dir = resolve_llm_model_dir(settings)
        if self.llm_model_dir is not None:
            self._load_llm()

    # --- preview ----------------------------------------------------------------------------------------
    def preview(self, request_json: str, adapter: str | None = None) -> Outcome:
        request = GenerationRequest.model_validate_json(request_json)
        extra: dict[str, Any] = {}
        if request.engine == "rules":
            from fraudgen.simulate.engine import generate_table

            table = generate_table(request)
        else:
            sampled = self._sample_llm(request, adapter)
            if isinstance(sampled, Outcome):
                return sampled
            table, report = sampled
            extra["llm"] = public_llm_report(report)
        return Outcome(200, preview_body(request, table, **extra))

    def _sample_llm(
        self, request: GenerationRequest, adapter: str | None
    ) -> tuple[pa.Table, dict[str, Any]] | Outcome:
        """Rows from this replica's LLM model (and its JSON report), or the error answer: 422 when the
        server has no model or the adapter/scenario is unknown, 503 when the configured model is broken."""
        unavailable = self._llm_unavailable()
        if unavailable is not None:
            return unavailable
        from fraudgen.llm.sample import generate_llm_table

        try:
            table, report = generate_llm_table(
                request,
                str(self.llm_model_dir),
                adapter=adapter or self.settings.llm_adapter,
                validate=False,
            )
        except (FileNotFoundError, ValueError) as exc:  # unknown/corrupt adapter, unknown scenario
            return error(422, f"engine llm: {exc}", field="adapter" if "adapter" in str(exc) else "engine")
        return table, report.model_dump(mode="json")

    def _load_llm(self) -> None:
        """Load the model once per replica, so readiness reflects a model that can actually answer."""
        model_dir = self.llm_model_dir
        if not module_available("fraudgen.llm.sample"):
            self.llm_error = "the LLM engine (fraudgen.llm.sample) is not installed in this build"
            return
        if model_dir is None or not model_dir.is_dir():
            self.llm_error = f"LLM model directory {model_dir} ({LLM_MODEL_SETTINGS}) does not exist"
            return
        try:
            import torch

            torch.set_num_threads(1)
            from fraudgen.llm.sample import get_engine

            get_engine(model_dir)
        except Exception as exc:
            self.llm_error = f"model {model_dir} failed to load: {type(exc).__name__}: {exc}"
            return
        self._llm_loaded = True

    def _llm_unavailable(self) -> Outcome | None:
        if self.llm_model_dir is None:
            # the server was not set up for the LLM engine: the request asks for something it does not offer
            return error(422, f"engine llm: no model configured (set {LLM_MODEL_SETTINGS})", field="engine")
        if not self._llm_loaded:
            return error(503, f"engine llm: {self.llm_error}", field="engine")
        return None

    # --- generate ---------------------------------------------------------------------------------------
    def generate(
        self, call: GenerateCall, llm_rows: pa.Table | None = None, llm_report: dict[str, Any] | None = None
    ) -> Outcome:
        """Generate (rules), or export ``llm_rows`` already sampled by the LLM deployment, exactly like a
        rule batch: parts per shard, gates, manifest, publication; then background persistence."""
        from fraudgen.pipeline import (
            BatchExistsError,
            GateFailedError,
            LlmOptions,
            export_table,
            generate_batch_inprocess,
        )

        fmt, allow_failed, audit = call.fmt, call.allow_failed, call.audit
        request = GenerationRequest.model_validate_json(call.request_json)
        chosen = self.resolve_sinks(call.sinks)
        if isinstance(chosen, Outcome):
            return chosen
        if request.engine == "llm" and llm_rows is None:
            sampled = self._sample_llm(request, call.adapter)
            if isinstance(sampled, Outcome):
                return sampled
            llm_rows, llm_report = sampled
        published = self.publish_request_event(request, fmt, sorted(chosen), audit)
        if published is not None:
            return published
        try:
            if llm_rows is not None:
                report_dict = llm_report or {}
                options = LlmOptions(
                    model_dir=str(report_dict.get("model_dir", "")), adapter=report_dict.get("adapter")
                )
                result = export_table(
                    request, llm_rows, self.settings, fmt=fmt, allow_failed=allow_failed,  # type: ignore[arg-type]
                    llm=options, llm_report=llm_report,
                )  # fmt: skip
            else:
                result = generate_batch_inprocess(request, self.settings, fmt=fmt, allow_failed=allow_failed)  # type: ignore[arg-type]
        except GateFailedError as exc:
            return error(422, str(exc), validation=exc.result.validation, batch_id=exc.result.batch_id)
        except BatchExistsError as exc:
            return error(409, str(exc), field="batch_id")
        except StoreError as exc:
            return error(503, f"output store: {exc}", dependency="output_store")
        persistence = self.start_persistence(result.batch_id, chosen)
        body = {
            **result.model_dump(include={"batch_id", "rows", "fraud_rows", "location", "manifest_uri"}),
            "batch_sha256": result.batch_sha256,
            "format": fmt,
            "files": [f.model_dump() for f in result.files],
            "validation": result.validation,
            "seconds": round(result.seconds, 4),
            "reused": result.reused,
            "persistence": persistence,
            "status_url": f"/v1/generator/batches/{result.batch_id}",
        }
        if llm_report is not None:
            body["llm"] = public_llm_report(llm_report)
        return Outcome(200, body)

    def resolve_sinks(self, asked: list[str] | None) -> set[str] | Outcome:
        """Default: every configured persistence sink; asking for an unconfigured one is a client error."""
        configured = {
            "postgres": self.settings.postgres_dsn is not None,
            "kafka": self.settings.kafka_bootstrap_servers is not None,
            "s3": self.settings.output_uri.startswith("s3://"),
        }
        if asked is None:
            return {s for s in PERSIST_SINKS if configured[s]}
        for sink in asked:
            if not configured[sink]:
                setting = {"postgres": "FRAUDGEN_POSTGRES_DSN", "kafka": "FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS",
                           "s3": "FRAUDGEN_OUTPUT_URI=s3://…"}[sink]  # fmt: skip
                return Outcome(
                    422,
                    {"detail": [{"loc": ["body", "sinks"], "msg": f"sink {sink} is not configured: {setting}",
                                 "type": "value_error"}], "message": f"sinks: {sink} is not configured"},
                )  # fmt: skip
        return set(asked) & set(PERSIST_SINKS)

    def publish_request_event(
        self, request: GenerationRequest, fmt: str, sinks: list[str], audit: dict[str, Any]
    ) -> Outcome | None:
        """One signed audit event per accepted generate request, before any work is done."""
        bootstrap = self.settings.kafka_bootstrap_servers
        if not bootstrap:
            return None
        if self.settings.kafka_hmac_key is None:
            return error(503, "kafka: FRAUDGEN_KAFKA_HMAC_KEY is required to sign events", dependency="kafka")
        from fraudgen.sinks.kafka import KafkaSinkError, publish_request_event

        event = {
            "event": "generate_request",
            "event_id": uuid.uuid4().hex,
            "received_at": datetime.now(UTC).isoformat(),
            "batch_id": request.resolved_batch_id,
            "format": fmt,
            "sinks": sinks,
            "request": request.model_dump(mode="json"),
            **audit,
        }
        try:
            publish_request_event(
                bootstrap,
                event,
                self.settings.kafka_hmac_key.get_secret_value().encode(),
                self.settings.kafka_hmac_key_id,
                topic=self.settings.kafka_topic_requests,
            )
        except KafkaSinkError as exc:
            return error(503, f"kafka: audit event not published: {exc}", dependency="kafka")
        return None

    def start_persistence(self, batch_id: str, sinks: set[str]) -> dict[str, str]:
        """Hand the written batch to the sink actors; returns each sink's initial state."""
        if not sinks:
            return {}
        if not module_available("fraudgen.sinks.persist"):
            return {s: "unavailable: fraudgen.sinks.persist is not installed in this build" for s in sinks}
        from deployments.persistence import launch_persistence

        return launch_persistence(self.settings, batch_id, sinks)

    # --- status -----------------------------------------------------------------------------------------
    def batch_status(self, batch_id: str) -> Outcome:
        from fraudgen.pipeline import read_manifest

        try:
            manifest = read_manifest(self.store, batch_id)
            failed = None if manifest else self._failed_manifest(batch_id)
        except StoreError as exc:
            return error(503, f"output store: {exc}", dependency="output_store")
        source = manifest or failed
        sinks: dict[str, Any] = {}
        if source is not None:
            state = "published" if manifest else "failed_validation"
            sinks["export"] = {"state": state, "rows": source["rows"]}
        if module_available("fraudgen.sinks.jobs"):
            from deployments.persistence import sink_states

            sinks.update(sink_states(self.settings, batch_id))
        if source is None and not sinks:
            return error(404, f"batch {batch_id} not found", field="batch_id")
        prefix = batch_prefix(batch_id)
        body = {
            "batch_id": batch_id,
            "state": sinks.get("export", {}).get("state", "unknown"),
            "rows": source["rows"] if source else None,
            "fraud_rows": source.get("fraud_rows") if source else None,
            "batch_sha256": source.get("batch_sha256") if source else None,
            "location": self.store.uri(prefix if manifest else f"_failed/{prefix}") if source else None,
            "sinks": sinks,
        }
        return Outcome(200, body)

    def _failed_manifest(self, batch_id: str) -> dict[str, Any] | None:
        for key in (
            f"_failed/{batch_prefix(batch_id)}/manifest.json",
            f"{batch_prefix(batch_id)}/FAILED.json",
        ):
            if self.store.exists(key):
                return dict(json.loads(self.store.read_bytes(key)))
        return None

    # --- idempotency ------------------------------------------------------------------------------------
    def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None:
        path = f"{IDEMPOTENCY_PREFIX}/{key_id}.json"
        if not self.store.exists(path):
            return None
        return dict(json.loads(self.store.read_bytes(path)))

    def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None:
        record = {"body_sha256": body_sha256, "status": outcome.status, "body": outcome.body,
                  "stored_at": datetime.now(UTC).isoformat()}  # fmt: skip
        self.store.write_bytes(
            f"{IDEMPOTENCY_PREFIX}/{key_id}.json", json.dumps(record, default=str).encode()
        )

    # --- readiness --------------------------------------------------------------------------------------
    def ready(self) -> dict[str, str]:
        """``{dependency: "ok" | reason}`` for every dependency this server is configured to use."""
        checks: dict[str, str] = {"output_store": _check(self.store.check_writable)}
        if self.settings.postgres_dsn is not None:
            checks["postgres"] = _check(self._ping_postgres)
        if self.settings.kafka_bootstrap_servers:
            checks["kafka"] = _check(self._ping_kafka)
        if self.llm_model_dir is not None:
            checks["llm_model"] = "ok" if self._llm_loaded else f"not loaded: {self.llm_error}"
        return checks

    def _ping_postgres(self) -> None:
        import psycopg

        assert self.settings.postgres_dsn is not None
        with psycopg.connect(self.settings.postgres_dsn.get_secret_value(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    def _ping_kafka(self) -> None:
        from confluent_kafka.admin import AdminClient

        if self.settings.kafka_hmac_key is None:
            raise RuntimeError("FRAUDGEN_KAFKA_HMAC_KEY is not set")
        bootstrap = str(self.settings.kafka_bootstrap_servers)
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
        admin.list_topics(timeout=2)


def _check(probe: Any) -> str:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # every failure is a "not ready" reason, never a 500
        from fraudgen.logs import mask_dsn

        return f"{type(exc).__name__}: {mask_dsn(str(exc))[:200]}"
    log.debug("ready check", seconds=round(time.perf_counter() - started, 4))
    return "ok"
