"""Background persistence of an exported batch to Postgres/Kafka, and the per-sink state the status endpoint
shows.

Why a detached actor: the API answers as soon as the Parquet is exported; loading Postgres and publishing
Kafka can take far longer than an HTTP request and must survive the replica that accepted it. Under Ray,
each batch is handed to a named detached actor (``fraudgen-persister``) that runs
``fraudgen.sinks.persist.persist_batch`` (which itself fans out to the sink actors). Without Ray (test
client, plain ASGI server) a daemon thread does the same. Progress and the final state per sink are the
sinks' own progress file next to the manifest (``fraudgen.sinks.jobs.Progress``), so the status endpoint
reads the same truth that ``fraudgen persist`` resumes from.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from fraudgen.config import Settings
from fraudgen.sinks.store import open_store

log = structlog.get_logger(__name__)
PERSISTER_NAME = "fraudgen-persister"


def _run(settings_json: str, batch_id: str, sinks: list[str]) -> dict[str, Any]:
    from fraudgen.sinks.persist import persist_batch  # type: ignore[import-not-found,unused-ignore]

    settings = Settings.model_validate_json(settings_json)
    try:
        results = persist_batch(settings.output_uri, batch_id, settings, set(sinks))
    except Exception as exc:  # the sinks record the failure in their progress file; log for operators
        log.error("background persistence failed", batch_id=batch_id, error=f"{type(exc).__name__}: {exc}")
        return {"error": str(exc)}
    log.info("background persistence finished", batch_id=batch_id, sinks=sorted(sinks))
    return {name: result.to_dict() for name, result in results.items()}


class Persister:
    """Body of the detached actor: runs one batch's persistence per call (max_concurrency bounds them)."""

    def run(self, settings_json: str, batch_id: str, sinks: list[str]) -> dict[str, Any]:
        return _run(settings_json, batch_id, sinks)


def _mark_pending(settings: Settings, batch_id: str, sinks: set[str]) -> None:
    from fraudgen.sinks.jobs import Progress

    progress = Progress.load(open_store(settings.output_uri), batch_id)
    for sink in sinks:
        if progress.sink(sink).state != "done":
            progress.set_state(sink, "pending")
    progress.save()


def launch_persistence(settings: Settings, batch_id: str, sinks: set[str]) -> dict[str, str]:
    """Start persisting in the background; returns ``{sink: "pending"}`` (or the reason it cannot start)."""
    _mark_pending(settings, batch_id, sinks)
    # secrets are part of the settings here on purpose: the persister needs the DSN and HMAC key, and the
    # payload only travels inside the Ray cluster (never logged, never stored in the Serve config)
    settings_json = _settings_json(settings)
    try:
        import ray

        if ray.is_initialized():
            actor_cls: Any = ray.remote(num_cpus=0, max_restarts=-1)(Persister)
            actor = actor_cls.options(
                name=PERSISTER_NAME,
                namespace="fraudgen",
                lifetime="detached",
                get_if_exists=True,
                max_concurrency=settings.persist_pool_size,
            ).remote()
            actor.run.remote(settings_json, batch_id, sorted(sinks))
            return dict.fromkeys(sorted(sinks), "pending")
    except Exception as exc:
        log.warning("persister actor unavailable; persisting in-process", error=str(exc))
    threading.Thread(target=_run, args=(settings_json, batch_id, sorted(sinks)), daemon=True).start()
    return dict.fromkeys(sorted(sinks), "pending")


def _settings_json(settings: Settings) -> str:
    import json

    body = settings.model_dump(mode="json")
    for name in ("postgres_dsn", "kafka_hmac_key"):
        secret = getattr(settings, name)
        body[name] = secret.get_secret_value() if secret is not None else None
    return json.dumps(body)


def sink_states(settings: Settings, batch_id: str) -> dict[str, dict[str, Any]]:
    """``{sink: {state, rows, detail}}`` for every persistence sink this batch was handed to."""
    from fraudgen.sinks.jobs import Progress

    progress = Progress.load(open_store(settings.output_uri), batch_id)
    return {
        name: {"state": sink.state, "rows": sink.rows_done, "detail": sink.error}
        for name, sink in sorted(progress.sinks.items())
    }
