"""The Ray actors that persist a batch's files: one Postgres connection or one Kafka producer each.

A file is the unit of work and of progress; transient errors are retried per file with exponential backoff
(tenacity) and anything else comes back as a failed :class:`FileOutcome` naming the sink, never as an
exception through Ray. The driver (:mod:`fraudgen.sinks.persist`) hands out files and records progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from fraudgen.config import Settings
from fraudgen.logs import mask_dsn
from fraudgen.sinks.store import StoreError, decode_part, open_store


@dataclass
class FileOutcome:
    file: str
    ok: bool
    rows: int
    rows_done: int
    written_now: int
    error: str | None = None
    acked: bytes | None = None  # np.packbits of the acknowledged mask (kafka partial files)


def read_batch_file(store: Any, key: str) -> pa.Table:
    """One data file of a batch as a contract table (Parquet, or CSV written by the pipeline)."""
    return decode_part(key, store.read_bytes(key))


def is_transient(exc: BaseException) -> bool:
    from fraudgen.sinks.kafka import KafkaSinkError

    if isinstance(exc, KafkaSinkError):
        return exc.transient
    return isinstance(exc, psycopg.OperationalError | StoreError | OSError)


def retrying(attempts: int, max_wait: float) -> Retrying:
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.25, max=max_wait),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )


def describe_error(sink: str, exc: BaseException) -> str:
    text = mask_dsn(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return text if text.startswith(f"{sink} sink") else f"{sink} sink: {type(exc).__name__}: {text}"


class PostgresWriter:
    """Ray actor: one Postgres connection, loads whole files idempotently."""

    def __init__(self, dsn: str, root_uri: str, attempts: int, max_wait: float) -> None:
        self._dsn, self._attempts, self._max_wait = dsn, attempts, max_wait
        self._store = open_store(root_uri)
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        from fraudgen.sinks.postgres import connect

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._dsn)
        return self._conn

    def load(self, key: str, file: str, batch_id: str) -> FileOutcome:
        from fraudgen.sinks.postgres import load_parquet_file

        try:
            table = read_batch_file(self._store, key)
            for attempt in retrying(self._attempts, self._max_wait):
                with attempt:
                    try:
                        inserted = load_parquet_file(self._connection(), table, batch_id)
                    except psycopg.OperationalError:
                        if self._conn is not None:
                            self._conn.close()
                        self._conn = None
                        raise
            return FileOutcome(file, True, table.num_rows, table.num_rows, inserted)
        except Exception as exc:
            return FileOutcome(file, False, 0, 0, 0, describe_error("postgres", exc))


class KafkaWriter:
    """Ray actor: one idempotent producer, publishes whole files (or their unacknowledged rows)."""

    def __init__(self, settings: Settings, root_uri: str) -> None:
        self._settings = settings
        self._store = open_store(root_uri)
        self._publisher: Any = None

    def _make(self) -> Any:
        from fraudgen.sinks.kafka import TransactionPublisher

        s = self._settings
        key = s.kafka_hmac_key.get_secret_value().encode() if s.kafka_hmac_key else b""
        return TransactionPublisher(
            str(s.kafka_bootstrap_servers),
            key,
            s.kafka_hmac_key_id,
            s.kafka_topic_events,
            message_timeout_ms=s.kafka_message_timeout_ms,
            rate_limit_per_s=s.kafka_rate_limit_per_second,
        )

    def publish(self, key: str, file: str, batch_id: str, acked: bytes | None) -> FileOutcome:
        from fraudgen.sinks.kafka import KafkaSinkError

        skip: np.ndarray | None = None
        rows = 0
        try:
            table = read_batch_file(self._store, key)
            rows = table.num_rows
            if acked is not None:
                skip = np.unpackbits(np.frombuffer(acked, np.uint8), count=rows, bitorder="little").astype(
                    bool
                )
            before = int(skip.sum()) if skip is not None else 0
            for attempt in retrying(
                self._settings.persist_retry_attempts, self._settings.persist_retry_max_wait_s
            ):
                with attempt:
                    if self._publisher is None:
                        self._publisher = self._make()
                    try:
                        self._publisher.publish_table(table, batch_id, skip)
                    except KafkaSinkError as exc:
                        if exc.acked is not None:
                            skip = exc.acked
                        self._publisher = None  # a fresh producer (new idempotence session) for the retry
                        raise
            return FileOutcome(file, True, rows, rows, rows - before)
        except Exception as exc:
            done = int(skip.sum()) if skip is not None else 0
            packed = np.packbits(skip, bitorder="little").tobytes() if skip is not None else None
            return FileOutcome(file, False, rows, done, 0, describe_error("kafka", exc), packed)
