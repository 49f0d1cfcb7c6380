"""Background persistence through the API against real Postgres and Kafka (started by session fixtures):
generate answers once the Parquet is exported, the sinks finish in the background, the status endpoint
reports each sink's state and counts, and the accepted request is audited on synthetic_generate_requests."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from deployments.app import create_app
from fraudgen.config import Settings
from fraudgen.sinks import kafka_verify as kv
from fraudgen.sinks import postgres as pgs
from fraudgen.sinks.persist import db_migrate_command

pytestmark = pytest.mark.services
KEY = "api-persist-test-key-0123456789"


def test_generate_persists_in_background(
    ray_session: None, postgres_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"api_{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    tag = time.time_ns()
    settings = Settings(
        output_uri=str(tmp_path / "out"),
        postgres_dsn=dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_hmac_key=KEY,
        kafka_topic_events=f"api-events-{tag}",
        kafka_topic_requests=f"api-requests-{tag}",
    )
    assert db_migrate_command(settings) == 0
    client = TestClient(create_app(settings))
    ready = client.get("/health/ready").json()
    assert ready["checks"] == {"output_store": "ok", "postgres": "ok", "kafka": "ok"}, ready
    answer = client.post("/v1/generator/generate", json={"count": 5000, "seed": 3, "fraud_rate": 0.1})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["persistence"] == {"kafka": "pending", "postgres": "pending"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(result["status_url"]).json()
        if all(status["sinks"].get(s, {}).get("state") in ("done", "failed") for s in ("postgres", "kafka")):
            break
        time.sleep(0.5)
    assert status["sinks"]["postgres"]["state"] == "done", status
    assert status["sinks"]["kafka"] == {"state": "done", "rows": 5000, "detail": None}
    assert status["sinks"]["postgres"]["rows"] == 5000
    with pgs.connect(dsn) as conn:
        assert pgs.batch_row_counts(conn, result["batch_id"])[0] == 5000
    events = kv.consume(kafka_bootstrap, f"api-requests-{tag}", verify=True, hmac_keys={"k1": KEY.encode()},
                        timeout_s=30, keep_records=True)  # fmt: skip
    assert events.accepted == 1 and events.rejected == 0
    assert events.records[0]["batch_id"] == result["batch_id"]
