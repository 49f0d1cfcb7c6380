"""Postgres sink: migrations, idempotent bulk load, WORM batch audit row.

Load path (per Parquet file, one transaction; encoders in :mod:`fraudgen.sinks.pgcopy`): a binary COPY
straight into ``synthetic_transactions``; when some row is already there, the primary key rejects that COPY
and the file is loaded the idempotent way instead, COPY into a TEMP staging table then ``INSERT … SELECT …
ON CONFLICT (transaction_id) DO NOTHING``. A retried or resumed load therefore never duplicates a row, and
a first load (the common case) pays neither the staging copy nor ON CONFLICT's speculative insertion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from fraudgen.logs import mask_dsn
from fraudgen.schema import conform
from fraudgen.sinks import pgcopy
from fraudgen.sinks.migrate import apply_migrations

log = structlog.get_logger(__name__)

_STAGE_DDL = (
    'CREATE TEMP TABLE IF NOT EXISTS fg_stage ("timestamp" timestamptz, amount_cents int8, latitude float8, '
    "longitude float8, is_fraud bool, "
    + ", ".join(f"{c} text" for c in pgcopy.TEXT_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_TARGET = (
    "transaction_id",
    "batch_id",
    "tenant_id",
    "timestamp",
    "user_id",
    "account_id",
    "card_id",
    "merchant_id",
    "merchant_category",
    "counterparty_id",
    "amount",
    "currency",
    "transaction_type",
    "channel",
    "status",
    "device_id",
    "ip_address",
    "country",
    "latitude",
    "longitude",
    "is_fraud",
    "fraud_scenario",
    "fraud_case_id",
    "source",
    "signature",
)
_SELECT = {
    "amount": "(amount_cents * 0.01)::numeric(18, 2)",
    "ip_address": "ip_address::inet",
    "timestamp": '"timestamp"',
}
_INSERT = (
    "INSERT INTO synthetic_transactions ("
    + ", ".join(f'"{c}"' for c in _TARGET)
    + ") SELECT "
    + ", ".join(_SELECT.get(c, c) for c in _TARGET)
    + " FROM fg_stage ON CONFLICT (transaction_id) DO NOTHING"
)
_COPY_STAGE = pgcopy.copy_statement("fg_stage", pgcopy.STAGE_COLUMNS)
_COPY_TARGET = pgcopy.copy_statement("synthetic_transactions", pgcopy.TARGET_COLUMNS)
ENCODE_CHUNK_ROWS = 100_000


class BatchConflictError(RuntimeError):
    """synthetic_batches already holds this batch_id with a different content hash."""


def connect(dsn: str) -> psycopg.Connection:
    """One connection with big temp buffers for the staging table.

    synchronous_commit stays on: the progress file records a file as loaded once its COMMIT returns, so a
    commit that a crash could still take back would turn a resume into a silent loss (a final count
    check against the manifest would catch it, but only after the fact)."""
    conn = psycopg.connect(dsn, connect_timeout=5, application_name="fraudgen")
    conn.execute("SET temp_buffers = '256MB'")
    conn.commit()
    return conn


def migrate(dsn: str) -> list[str]:
    """Apply the missing versioned migrations (fraudgen/sinks/sql/); returns the versions applied now."""
    with psycopg.connect(
        dsn, connect_timeout=5, autocommit=True, application_name="fraudgen-migrate"
    ) as conn:
        applied = apply_migrations(conn)
    log.info("postgres_migrated", dsn=mask_dsn(dsn), applied=applied)
    return applied


def _as_table(path_or_table: str | Path | pa.Table) -> pa.Table:
    if isinstance(path_or_table, pa.Table):
        return conform(path_or_table)
    return conform(pq.read_table(path_or_table))


def load_parquet_file(conn: psycopg.Connection, path_or_table: str | Path | pa.Table, batch_id: str) -> int:
    """Load one Parquet file (or table) of ``batch_id`` idempotently; returns the rows newly inserted.

    Fast path: one binary COPY straight into synthetic_transactions (COPY's batched heap inserts, no
    staging copy, no ON CONFLICT bookkeeping). If any row is already there (a resume of a file that did
    commit, or ids shared with another batch) the primary key stops the COPY, its transaction rolls back
    and the file goes the idempotent way: COPY into a TEMP staging table, then ``INSERT … ON CONFLICT
    (transaction_id) DO NOTHING``. Either way the file is one transaction: after a failure nothing of it is
    visible and no row is ever stored twice.
    """
    table = _as_table(path_or_table)
    if table.num_rows and not pc.all(pc.equal(table.column("batch_id"), batch_id)).as_py():
        raise ValueError(f"postgres sink: file rows do not all belong to batch {batch_id!r}")
    if table.num_rows == 0:
        return 0
    try:
        with conn.transaction(), conn.cursor() as cur:
            _copy(cur, _COPY_TARGET, table, pgcopy.encode_target_rows)
            return table.num_rows
    except psycopg.errors.UniqueViolation:
        log.info("postgres_load_dedup", batch_id=batch_id, rows=table.num_rows)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE_DDL)
        _copy(cur, _COPY_STAGE, table, pgcopy.encode_stage_rows)
        cur.execute(_INSERT)
        inserted = cur.rowcount
    return int(inserted)


def _copy(
    cur: psycopg.Cursor[Any], statement: str, table: pa.Table, encode: Callable[[pa.Table], pa.Buffer]
) -> None:
    """One binary COPY of ``table``, encoded and sent in chunks (the server parses while we encode)."""
    with cur.copy(statement) as copy:
        copy.write(pgcopy.HEADER)
        for start in range(0, table.num_rows, ENCODE_CHUNK_ROWS):
            view = memoryview(encode(table.slice(start, ENCODE_CHUNK_ROWS)))
            for lo in range(0, len(view), 8 << 20):
                copy.write(view[lo : lo + (8 << 20)])
        copy.write(pgcopy.TRAILER)


def batch_row_counts(conn: psycopg.Connection, batch_id: str) -> tuple[int, int]:
    """(rows, fraud rows) of one batch currently in synthetic_transactions."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM synthetic_transactions WHERE batch_id = %s",
        (batch_id,),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0]), int(row[1])


# --- WORM audit row -------------------------------------------------------------------------------------


def record_batch(dsn: str, manifest: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Insert the batch's audit row (sha256_hash = manifest batch_sha256). Idempotent for the same hash;
    raises :class:`BatchConflictError` when the batch_id is already recorded with another hash."""
    batch_id = manifest["batch_id"]
    digest = manifest["batch_sha256"]
    with psycopg.connect(dsn, connect_timeout=5, application_name="fraudgen") as conn, conn.transaction():
        inserted = conn.execute(
            "INSERT INTO synthetic_batches (batch_id, sha256_hash, schema_version, rows, fraud_rows, "
            "manifest, metadata) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) "
            "ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
            (
                batch_id,
                digest,
                str(manifest.get("schema_version", "1")),
                int(manifest["rows"]),
                int(manifest.get("fraud_rows", 0)),
                json.dumps(manifest, default=str),
                json.dumps(metadata, default=str),
            ),
        ).fetchone()
        if inserted is not None:
            log.info("batch_recorded", batch_id=batch_id, sha256=digest)
            return
        existing = conn.execute(
            "SELECT sha256_hash FROM synthetic_batches WHERE batch_id = %s", (batch_id,)
        ).fetchone()
    if existing is None or existing[0] != digest:
        raise BatchConflictError(
            f"postgres sink: batch {batch_id!r} is already recorded with sha256 "
            f"{existing[0] if existing else '?'} != {digest}; synthetic_batches is write-once"
        )
