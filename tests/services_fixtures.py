"""Session fixtures that start real Postgres, Kafka-protocol and S3-protocol servers (see the sinks issue).

Built on fraudgen/devservices/ (the same code as ``fraudgen dev up``): each server binds 127.0.0.1 on a
free port, is started lazily by the first test that asks for it and stopped at session end by the pid this
session started. Also ``make_batch``: writes a batch in the pipeline's layout
(``<root>/batch_id=<id>/part-NNNNN.parquet`` + manifest.json) from the rule engine, without Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraudgen.devservices import KafkaBroker, PostgresServer, S3Server
from fraudgen.pipeline import FileEntry, batch_sha256


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.dsn


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[dict[str, str]]:
    """``{endpoint_url, access_key, secret_key, bucket, region}`` of a SeaweedFS with SSE-S3 enabled."""
    server = S3Server()
    server.start()
    try:
        yield server.info()
    finally:
        server.destroy()


def _table_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_batch(root: str | Path, table: pa.Table, files: int, request: dict[str, Any] | None = None) -> dict:
    """Write ``table`` as ``files`` Parquet parts + manifest.json (the pipeline's contract); returns it."""
    batch_id = table.column("batch_id")[0].as_py()
    directory = Path(root) / f"batch_id={batch_id}"
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-table.num_rows // files)
    entries = []
    for i in range(files):
        part = table.slice(i * per, per)
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(part, path)
        data = path.read_bytes()
        fraud = int(pc.sum(part.column("is_fraud").cast(pa.int64())).as_py() or 0)
        entries.append(
            {
                "path": path.name,
                "rows": part.num_rows,
                "fraud_rows": fraud,
                "sha256": _table_sha(data),
                "bytes": len(data),
            }
        )
    body = {"batch_id": batch_id, "schema_version": "1", "rows": table.num_rows, "files": entries}
    digest = batch_sha256(batch_id, table.num_rows, [FileEntry.model_validate(e) for e in entries])
    manifest = {
        **body,
        "fraud_rows": sum(e["fraud_rows"] for e in entries),
        "request": request or {},
        "batch_sha256": digest,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@pytest.fixture()
def make_batch(tmp_path: Path) -> Callable[..., tuple[str, dict, pa.Table]]:
    """``make_batch(rows, seed, files=5, batch_id=None) -> (root, manifest, table)`` in a temp root."""

    def make(rows: int, seed: int, files: int = 5, batch_id: str | None = None) -> tuple[str, dict, pa.Table]:
        from fraudgen.request import GenerationRequest
        from fraudgen.simulate.engine import generate_table

        request = GenerationRequest(rows=rows, seed=seed, batch_id=batch_id)
        table = generate_table(request)
        root = str(tmp_path / f"out-{seed}-{os.urandom(3).hex()}")
        manifest = write_batch(root, table, files, json.loads(request.model_dump_json()))
        return root, manifest, table

    return make
