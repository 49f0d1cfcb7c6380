"""State of persistence: ``generation_jobs`` rows in Postgres and the per-file progress file.

Two records, two purposes:

* ``<root>/batch_id=<id>/_persist_progress.json`` (next to manifest.json, in the same local directory or S3
  prefix) is the source of truth for RESUME, for every sink and whether or not Postgres is configured: per
  sink and per file, the rows done and — for a Kafka file interrupted part-way — the bit mask of rows the
  broker acknowledged, so a resume re-sends only the others. It lives where the Parquet lives because a
  persist can only run when the Parquet is readable anyway, so resuming never depends on the health of a
  sink. The leading underscore keeps Parquet dataset readers from treating it as data. One ``persist`` per
  batch at a time (the driver is the only writer).
* ``generation_jobs`` (when Postgres is configured and reachable) mirrors each sink's state
  (pending/running/done/failed, rows, error) for operators and dashboards.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psycopg

from fraudgen.sinks.store import Store, batch_prefix

PROGRESS_FILE = "_persist_progress.json"
STATES = ("pending", "running", "done", "failed")


# --- per-file progress ----------------------------------------------------------------------------------


@dataclass
class FileProgress:
    rows: int
    rows_done: int = 0
    acked: str | None = None  # base64 of the little-endian bit mask of acknowledged rows (partial files)

    @property
    def done(self) -> bool:
        return self.rows_done >= self.rows

    def acked_mask(self) -> np.ndarray | None:
        if self.acked is None:
            return None
        bits = np.frombuffer(base64.b64decode(self.acked), dtype=np.uint8)
        return np.unpackbits(bits, count=self.rows, bitorder="little").astype(np.bool_)


def pack_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(np.bool_), bitorder="little").tobytes()).decode("ascii")


@dataclass
class SinkProgress:
    state: str = "pending"
    error: str | None = None
    files: dict[str, FileProgress] = field(default_factory=dict)

    @property
    def rows_done(self) -> int:
        return sum(f.rows_done for f in self.files.values())


@dataclass
class Progress:
    """The progress file of one batch: ``load`` / ``mark_file`` / ``save``."""

    store: Store
    batch_id: str
    sinks: dict[str, SinkProgress] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{batch_prefix(self.batch_id)}/{PROGRESS_FILE}"

    @classmethod
    def load(cls, store: Store, batch_id: str) -> Progress:
        progress = cls(store=store, batch_id=batch_id)
        if not store.exists(progress.key):
            return progress
        raw = json.loads(store.read_bytes(progress.key))
        for sink, data in raw.get("sinks", {}).items():
            files = {name: FileProgress(**f) for name, f in data.get("files", {}).items()}
            progress.sinks[sink] = SinkProgress(
                state=data.get("state", "pending"), error=data.get("error"), files=files
            )
        return progress

    def sink(self, name: str) -> SinkProgress:
        return self.sinks.setdefault(name, SinkProgress())

    def mark_file(
        self, sink: str, file: str, rows: int, rows_done: int, acked: np.ndarray | None = None
    ) -> None:
        entry = FileProgress(rows=rows, rows_done=rows_done)
        if acked is not None and rows_done < rows:
            entry.acked = pack_mask(acked)
        self.sink(sink).files[file] = entry

    def set_state(self, sink: str, state: str, error: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        progress = self.sink(sink)
        progress.state, progress.error = state, error

    def save(self) -> None:
        body = {
            "batch_id": self.batch_id,
            "sinks": {
                name: {
                    "state": s.state,
                    "error": s.error,
                    "files": {f: asdict(p) for f, p in sorted(s.files.items())},
                }
                for name, s in sorted(self.sinks.items())
            },
        }
        self.store.write_bytes(self.key, json.dumps(body, indent=1).encode())


# --- generation_jobs ------------------------------------------------------------------------------------


def set_job(
    conn: psycopg.Connection,
    batch_id: str,
    sink: str,
    state: str,
    rows_total: int | None = None,
    rows_done: int | None = None,
    error: str | None = None,
) -> None:
    """Upsert one sink's state of one batch (error cleared unless given)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    conn.execute(
        "INSERT INTO generation_jobs (batch_id, sink, state, rows_total, rows_done, error) "
        "VALUES (%s, %s, %s, COALESCE(%s, 0), COALESCE(%s, 0), %s) "
        "ON CONFLICT (batch_id, sink) DO UPDATE SET state = EXCLUDED.state, "
        "rows_total = COALESCE(%s, generation_jobs.rows_total), "
        "rows_done = COALESCE(%s, generation_jobs.rows_done), error = EXCLUDED.error, updated_at = now()",
        (batch_id, sink, state, rows_total, rows_done, error, rows_total, rows_done),
    )
    conn.commit()


def get_jobs(conn: psycopg.Connection, batch_id: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "SELECT sink, state, rows_total, rows_done, error, updated_at FROM generation_jobs "
        "WHERE batch_id = %s",
        (batch_id,),
    ).fetchall()
    conn.commit()
    return {
        r[0]: {"state": r[1], "rows_total": r[2], "rows_done": r[3], "error": r[4], "updated_at": r[5]}
        for r in rows
    }
