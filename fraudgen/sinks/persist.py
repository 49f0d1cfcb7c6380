"""Persist a written batch to Postgres and Kafka with Ray actors; the same call resumes a failed persist.

The actors read the Parquet files listed in manifest.json (local directory or S3), so a sink outage never
loses data: the files stay, and ``fraudgen persist --batch-id ID`` picks up where the last run stopped.

* Postgres actors: one connection each; a file is one transaction (binary COPY straight into the table,
  or, when some of its rows are already there, COPY → staging → INSERT … ON CONFLICT DO NOTHING), so a
  resume may safely reload any file: exact counts by construction. At the end
  the batch's row count in Postgres is checked against the manifest, then the WORM audit row is written.
* Kafka actors: one idempotent producer each. Progress is kept per file (jobs.py: the progress file next
  to manifest.json); a fully acknowledged file is never re-sent and a partly acknowledged one re-sends
  only the rows the broker did not acknowledge. Guarantee: every row acknowledged at least once; a row
  whose delivery failed by timeout may have been stored anyway and is then re-sent (consumers dedupe on
  transaction_id). A broker that loses acknowledged data (e.g. tansu ``memory://`` restarted) cannot be
  repaired from the producer side: a resume re-sends only what was never acknowledged.

Transient errors (connection refused/reset, timeouts) are retried per file with exponential backoff
(tenacity); after the last attempt, or on a permanent error, the sink is marked failed with the reason
(generation_jobs and the progress file) and its remaining files are not attempted. Secrets never appear in
logs or errors (DSN passwords masked, HMAC keys never rendered).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psycopg
import structlog

from fraudgen.config import Settings
from fraudgen.sinks.jobs import Progress, set_job
from fraudgen.sinks.store import MANIFEST, StoreError, batch_prefix, open_store
from fraudgen.sinks.writers import FileOutcome, KafkaWriter, PostgresWriter, describe_error, retrying

log = structlog.get_logger(__name__)

SINKS = ("postgres", "kafka")


class PersistError(RuntimeError):
    """The batch cannot be persisted at all (no manifest, unknown sink, missing settings)."""


@dataclass
class SinkResult:
    sink: str
    state: str  # done | failed
    rows_total: int
    rows_done: int
    files_total: int
    files_done: int
    rows_written_now: int
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- driver ---------------------------------------------------------------------------------------------


def _preflight(sink: str, settings: Settings) -> None:
    """Fail fast, with the sink named, when a sink is not configured or not reachable."""
    attempts, max_wait = settings.persist_retry_attempts, settings.persist_retry_max_wait_s
    if sink == "postgres":
        if settings.postgres_dsn is None:
            raise PersistError("postgres sink: FRAUDGEN_POSTGRES_DSN is not set")
        from fraudgen.sinks.postgres import migrate

        for attempt in retrying(attempts, max_wait):
            with attempt:
                migrate(settings.postgres_dsn.get_secret_value())
    elif sink == "kafka":
        if not settings.kafka_bootstrap_servers:
            raise PersistError("kafka sink: FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS is not set")
        if settings.kafka_hmac_key is None:
            raise PersistError("kafka sink: FRAUDGEN_KAFKA_HMAC_KEY is not set (events are always signed)")
        from fraudgen.sinks.kafka import ensure_topics

        topics = (settings.kafka_topic_events, settings.kafka_topic_requests)
        for attempt in retrying(attempts, max_wait):
            with attempt:
                ensure_topics(
                    settings.kafka_bootstrap_servers,
                    settings.kafka_partitions,
                    topics,
                    timeout_s=min(10.0, settings.kafka_message_timeout_ms / 1000),
                )
    else:
        raise PersistError(f"unknown sink {sink!r}; known: {', '.join(SINKS)}")


class _Jobs:
    """generation_jobs mirror; best effort (the progress file is the source of truth for resume)."""

    def __init__(self, settings: Settings, batch_id: str) -> None:
        self._batch_id = batch_id
        self._conn: psycopg.Connection | None = None
        if settings.postgres_dsn is not None:
            try:
                self._conn = psycopg.connect(settings.postgres_dsn.get_secret_value(), connect_timeout=3)
            except psycopg.Error:
                self._conn = None

    def set(self, sink: str, state: str, **kwargs: Any) -> None:
        if self._conn is None:
            return
        try:
            set_job(self._conn, self._batch_id, sink, state, **kwargs)
        except psycopg.Error as exc:
            log.warning("generation_jobs_update_failed", sink=sink, error=describe_error("postgres", exc))
            if self._conn.broken:
                self._conn.close()
                self._conn = None
            else:
                self._conn.rollback()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def persist_batch(
    root_uri: str,
    batch_id: str,
    settings: Settings,
    sinks: set[str],
    metadata: dict[str, Any] | None = None,
) -> dict[str, SinkResult]:
    """Persist (or resume persisting) one written batch to ``sinks``; never raises for a sink failure."""
    import ray

    from fraudgen.raylocal import init_ray

    unknown = set(sinks) - set(SINKS)
    if unknown:
        raise PersistError(f"unknown sink(s) {', '.join(sorted(unknown))}; known: {', '.join(SINKS)}")
    store = open_store(root_uri)
    prefix = batch_prefix(batch_id)
    if not store.exists(f"{prefix}/{MANIFEST}"):
        raise PersistError(
            f"batch {batch_id!r}: no {MANIFEST} under {store.uri(prefix)} (not written, or failed)"
        )
    manifest = json.loads(store.read_bytes(f"{prefix}/{MANIFEST}"))
    files = {f["path"]: int(f["rows"]) for f in manifest["files"]}
    total = int(manifest["rows"])
    progress = Progress.load(store, batch_id)
    jobs = _Jobs(settings, batch_id)
    started = time.perf_counter()
    results: dict[str, SinkResult] = {}
    todo: dict[str, list[str]] = {}
    written: dict[str, int] = {}
    try:
        for sink in sorted(sinks, key=SINKS.index):  # postgres first: its migration creates generation_jobs
            jobs.set(sink, "running", rows_total=total, rows_done=progress.sink(sink).rows_done)
            try:
                _preflight(sink, settings)
            except Exception as exc:
                reason = describe_error(sink, exc)
                results[sink] = _finish(progress, jobs, sink, files, total, 0, started, reason)
                continue
            pending = [
                f for f in files if not (f in progress.sink(sink).files and progress.sink(sink).files[f].done)
            ]
            todo[sink], written[sink] = pending, 0
            progress.set_state(sink, "running")
        progress.save()
        if any(todo.values()):
            init_ray()
            _run_actors(ray, root_uri, prefix, batch_id, settings, todo, files, progress, jobs, written)
        for sink in todo:
            error = progress.sink(sink).error
            if error is None and sink == "postgres":
                error = _finish_postgres(settings, manifest, metadata, progress)
            results[sink] = _finish(progress, jobs, sink, files, total, written[sink], started, error)
    finally:
        jobs.close()
    return results


def _run_actors(
    ray: Any,
    root_uri: str,
    prefix: str,
    batch_id: str,
    settings: Settings,
    todo: dict[str, list[str]],
    files: dict[str, int],
    progress: Progress,
    jobs: _Jobs,
    written: dict[str, int],
) -> None:
    """Round-robin the files of each sink over its actor pool; record each file as it completes."""
    pools: dict[str, list[Any]] = {}
    for sink, pending in todo.items():
        size = min(settings.persist_pool_size, len(pending))
        if size == 0:
            continue
        if sink == "postgres":
            cls = ray.remote(num_cpus=0)(PostgresWriter)
            dsn = settings.postgres_dsn.get_secret_value() if settings.postgres_dsn else ""
            pools[sink] = [
                cls.remote(dsn, root_uri, settings.persist_retry_attempts, settings.persist_retry_max_wait_s)
                for _ in range(size)
            ]
        else:
            cls = ray.remote(num_cpus=0)(KafkaWriter)
            pools[sink] = [cls.remote(settings, root_uri) for _ in range(size)]
    queues = {sink: list(pending) for sink, pending in todo.items()}
    in_flight: dict[Any, tuple[str, Any]] = {}

    def submit(sink: str, actor: Any) -> None:
        if not queues[sink] or progress.sink(sink).error is not None:
            return
        file = queues[sink].pop(0)
        if sink == "postgres":
            ref = actor.load.remote(f"{prefix}/{file}", file, batch_id)
        else:
            entry = progress.sink("kafka").files.get(file)
            acked = entry.acked_mask() if entry is not None else None
            packed = np.packbits(acked, bitorder="little").tobytes() if acked is not None else None
            ref = actor.publish.remote(f"{prefix}/{file}", file, batch_id, packed)
        in_flight[ref] = (sink, actor)

    for sink, actors in pools.items():
        for actor in actors:
            submit(sink, actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        sink, actor = in_flight.pop(ready[0])
        outcome: FileOutcome = ray.get(ready[0])
        acked = None
        if outcome.acked is not None:
            acked = np.unpackbits(
                np.frombuffer(outcome.acked, np.uint8), count=files[outcome.file], bitorder="little"
            ).astype(bool)
        if outcome.ok or outcome.rows_done:
            progress.mark_file(sink, outcome.file, files[outcome.file], outcome.rows_done, acked)
        written[sink] += outcome.written_now
        if not outcome.ok and progress.sink(sink).error is None:
            progress.set_state(sink, "failed", outcome.error)
            log.error(
                "persist_file_failed", sink=sink, batch_id=batch_id, file=outcome.file, error=outcome.error
            )
        progress.save()
        jobs.set(
            sink,
            "running" if outcome.ok else "failed",
            rows_done=progress.sink(sink).rows_done,
            error=outcome.error,
        )
        submit(sink, actor)
    for actors in pools.values():
        for actor in actors:
            ray.kill(actor)


def _finish_postgres(
    settings: Settings, manifest: dict[str, Any], metadata: dict[str, Any] | None, progress: Progress
) -> str | None:
    """Check the batch's row count in Postgres against the manifest, then write the WORM audit row."""
    from fraudgen.sinks.postgres import batch_row_counts, record_batch

    assert settings.postgres_dsn is not None
    dsn = settings.postgres_dsn.get_secret_value()
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            rows, _ = batch_row_counts(conn, manifest["batch_id"])
        if rows != int(manifest["rows"]):
            # e.g. the table was truncated after an earlier run: forget file progress so a resume reloads
            progress.sink("postgres").files.clear()
            return (
                f"postgres sink: {rows} rows of batch {manifest['batch_id']} in synthetic_transactions, "
                f"manifest says {manifest['rows']}; run `fraudgen persist` again to reload"
            )
        record_batch(dsn, manifest, {"request": manifest.get("request"), **(metadata or {})})
    except Exception as exc:
        return describe_error("postgres", exc)
    return None


def _finish(
    progress: Progress,
    jobs: _Jobs,
    sink: str,
    files: dict[str, int],
    total: int,
    written: int,
    started: float,
    error: str | None,
) -> SinkResult:
    state = "failed" if error else "done"
    sp = progress.sink(sink)
    progress.set_state(sink, state, error)
    try:
        progress.save()
    except StoreError as exc:
        log.error("progress_save_failed", sink=sink, error=str(exc))
    jobs.set(sink, state, rows_total=total, rows_done=sp.rows_done, error=error)
    result = SinkResult(
        sink,
        state,
        total,
        sp.rows_done,
        len(files),
        sum(1 for f in files if f in sp.files and sp.files[f].done),
        written,
        round(time.perf_counter() - started, 3),
        error,
    )
    (log.error if error else log.info)("persist_sink_finished", **{k: v for k, v in result.to_dict().items()})
    return result


# --- CLI entry points (wired into Typer by fraudgen/cli.py) ---------------------------------------------


def configured_sinks(settings: Settings) -> set[str]:
    found = set()
    if settings.postgres_dsn is not None:
        found.add("postgres")
    if settings.kafka_bootstrap_servers:
        found.add("kafka")
    return found


def persist_command(batch_id: str, out: str | None, sinks: str | None, settings: Settings) -> int:
    """``fraudgen persist --batch-id ID [--out URI] [--sink postgres,kafka]``: 0 all done, 1 a sink failed,
    2 usage/input error (unknown sink, nothing configured, batch not found)."""
    chosen = {s.strip() for s in sinks.split(",") if s.strip()} if sinks else configured_sinks(settings)
    chosen.discard("s3")  # the files are already in the store; nothing to persist for s3
    if not chosen:
        print(
            "error: no sink to persist to (set FRAUDGEN_POSTGRES_DSN and/or FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS"
            " or pass --sink)",
            file=sys.stderr,
        )
        return 2
    try:
        results = persist_batch(out or settings.output_uri, batch_id, settings, chosen)
    except (PersistError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results.values():
        print(json.dumps(result.to_dict()))
    return 0 if all(r.state == "done" for r in results.values()) else 1


def db_migrate_command(settings: Settings) -> int:
    """``fraudgen db migrate``: apply the SQL migrations. 0 ok, 1 database error, 2 no DSN configured."""
    from fraudgen.sinks.postgres import migrate

    if settings.postgres_dsn is None:
        print("error: FRAUDGEN_POSTGRES_DSN is not set", file=sys.stderr)
        return 2
    try:
        applied = migrate(settings.postgres_dsn.get_secret_value())
    except Exception as exc:
        print(f"error: {describe_error('postgres', exc)}", file=sys.stderr)
        return 1
    print(json.dumps({"applied": applied}))
    return 0
