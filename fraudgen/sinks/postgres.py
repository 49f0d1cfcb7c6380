"""Postgres sink: migrations, idempotent bulk load, WORM batch audit row.

Load path (per Parquet file, one transaction): the Arrow table is encoded into Postgres' binary COPY
format with numpy/Arrow (no per-row Python), COPYed into a session TEMP staging table, then moved with
``INSERT … SELECT … ON CONFLICT (transaction_id) DO NOTHING`` so a retried or resumed load never
duplicates a row. Binary COPY of a float into ``numeric`` fails and text numerics are slow to parse, so the
amount travels as exact integer cents (int8) and becomes ``numeric(18,2)`` in the INSERT (``cents * 0.01``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from fraudgen.logs import mask_dsn
from fraudgen.schema import TRANSACTION_SCHEMA, conform, decimal_to_cents
from fraudgen.sinks.migrate import apply_migrations

log = structlog.get_logger(__name__)

#: microseconds between the Unix epoch and Postgres' epoch (2000-01-01 UTC)
_PG_EPOCH_US = 946_684_800_000_000
_FIXED = ("timestamp", "amount_cents", "latitude", "longitude", "is_fraud")
#: every string column of the contract, in schema order (sent as text by COPY)
_TEXT = tuple(f.name for f in TRANSACTION_SCHEMA if pa.types.is_string(f.type))
_STAGE_COLUMNS = _FIXED + _TEXT
_STAGE_DDL = (
    'CREATE TEMP TABLE IF NOT EXISTS fg_stage ("timestamp" timestamptz, amount_cents int8, latitude float8, '
    "longitude float8, is_fraud bool, " + ", ".join(f"{c} text" for c in _TEXT) + ") ON COMMIT DELETE ROWS"
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
_COPY = "COPY fg_stage (" + ", ".join(f'"{c}"' for c in _STAGE_COLUMNS) + ") FROM STDIN (FORMAT BINARY)"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
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


# --- binary COPY encoding -------------------------------------------------------------------------------


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(values.shape[0], -1)


def _binary_from_matrix(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix).tobytes())]
    )


def _fixed_part(table: pa.Table) -> pa.Array:
    """Per row: field count + the five fixed-width fields with their length words, as one 55-byte value."""
    n = table.num_rows
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy() - _PG_EPOCH_US
    cents = decimal_to_cents(table.column("amount"))
    lat = table.column("latitude").to_numpy()
    lon = table.column("longitude").to_numpy()
    fraud = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(np.uint8)
    out = np.empty((n, 55), dtype=np.uint8)
    out[:, 0:2] = np.frombuffer(np.array([len(_STAGE_COLUMNS)], ">i2").tobytes(), np.uint8)
    eight = np.frombuffer(np.array([8], ">i4").tobytes(), np.uint8)
    for i, (values, dtype) in enumerate(((ts, ">i8"), (cents, ">i8"), (lat, ">f8"), (lon, ">f8"))):
        start = 2 + 12 * i
        out[:, start : start + 4] = eight
        out[:, start + 4 : start + 12] = _be(values, dtype)
    out[:, 50:54] = np.frombuffer(np.array([1], ">i4").tobytes(), np.uint8)
    out[:, 54] = fraud
    return _binary_from_matrix(out)


def _text_parts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """(4-byte big-endian length or -1 for NULL, the bytes) of one text column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    if column.null_count:
        valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
        lengths = np.where(valid, lengths, -1)
        column = pc.fill_null(column, "")
    return _binary_from_matrix(_be(np.asarray(lengths), ">i4")), column.cast(pa.binary())


def encode_copy_rows(table: pa.Table) -> pa.Buffer:
    """The tuples of a binary COPY stream (no header/trailer) for the staging table, vectorised."""
    parts: list[pa.Array] = [_fixed_part(table)]
    for name in _TEXT:
        parts.extend(_text_parts(table.column(name)))
    rows = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
    lo, hi = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    data = rows.buffers()[2]
    assert data is not None
    return data.slice(lo, hi - lo)


def _as_table(path_or_table: str | Path | pa.Table) -> pa.Table:
    if isinstance(path_or_table, pa.Table):
        return conform(path_or_table)
    return conform(pq.read_table(path_or_table))


def load_parquet_file(conn: psycopg.Connection, path_or_table: str | Path | pa.Table, batch_id: str) -> int:
    """Load one Parquet file (or table) of ``batch_id`` idempotently; returns the rows newly inserted.

    COPY + INSERT run in one transaction: after a failure nothing of this file is visible and the retry
    redoes it; rows already present (an earlier attempt that did commit) are skipped by ON CONFLICT.
    """
    table = _as_table(path_or_table)
    if table.num_rows and not pc.all(pc.equal(table.column("batch_id"), batch_id)).as_py():
        raise ValueError(f"postgres sink: file rows do not all belong to batch {batch_id!r}")
    if table.num_rows == 0:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE_DDL)
        with cur.copy(_COPY) as copy:
            copy.write(_COPY_HEADER)
            for start in range(0, table.num_rows, ENCODE_CHUNK_ROWS):
                body = encode_copy_rows(table.slice(start, ENCODE_CHUNK_ROWS))
                view = memoryview(body)
                for lo in range(0, len(view), 8 << 20):
                    copy.write(view[lo : lo + (8 << 20)])
            copy.write(_COPY_TRAILER)
        cur.execute(_INSERT)
        inserted = cur.rowcount
    return int(inserted)


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
