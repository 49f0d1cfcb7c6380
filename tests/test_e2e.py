"""End to end as a user runs it: `fraudgen generate --sink s3,postgres,kafka` against real servers
(SeaweedFS with SSE, Postgres 15, a Kafka-protocol broker), then every sink is checked against the others."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import boto3
import psycopg
import pytest

from fraudgen.pipeline import FileEntry, batch_sha256
from fraudgen.sinks.kafka_verify import consume

ROWS = int(os.environ.get("FRAUDGEN_E2E_ROWS", "1000000"))
HMAC_KEY = "e2e-test-key-not-a-secret"


@pytest.fixture(scope="module")
def env(s3_endpoint: dict[str, str], postgres_dsn: str, kafka_bootstrap: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        "AWS_ENDPOINT_URL": s3_endpoint["endpoint_url"],
        "AWS_ACCESS_KEY_ID": s3_endpoint["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3_endpoint["secret_key"],
        "AWS_REGION": s3_endpoint["region"],
        "FRAUDGEN_POSTGRES_DSN": postgres_dsn,
        "FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDGEN_KAFKA_HMAC_KEY": HMAC_KEY,
        "FRAUDGEN_KAFKA_HMAC_KEY_ID": "e2e",
        "FRAUDGEN_KAFKA_TOPIC_EVENTS": "e2e_tx_events",
        "FRAUDGEN_KAFKA_TOPIC_REQUESTS": "e2e_generate_requests",
    }


def _cli(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudgen.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _s3(s3_endpoint: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        aws_access_key_id=s3_endpoint["access_key"],
        aws_secret_access_key=s3_endpoint["secret_key"],
        region_name=s3_endpoint["region"],
    )


def test_generate_to_s3_postgres_and_kafka_agree(
    env: dict[str, str], s3_endpoint: dict[str, str], postgres_dsn: str, kafka_bootstrap: str
) -> None:
    bucket = s3_endpoint["bucket"]
    result = _cli(env, "generate", "--rows", str(ROWS), "--seed", "9", "--batch-id", "e2e",
                  "--out", f"s3://{bucket}/e2e", "--sink", "s3,postgres,kafka", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    assert summary["rows"] == ROWS
    assert {name: s["state"] for name, s in summary["sinks"].items()} == {"postgres": "done", "kafka": "done"}

    # S3: every object encrypted at rest; the manifest's hashes match the bytes stored
    s3 = _s3(s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="e2e/batch_id=e2e/")["Contents"]]
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("report.html") for k in keys)
    for key in keys:
        assert s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "AES256", key
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="e2e/batch_id=e2e/manifest.json")["Body"].read())
    for entry in manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key=f"e2e/batch_id=e2e/{entry['path']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    files = [FileEntry.model_validate(f) for f in manifest["files"]]
    assert batch_sha256("e2e", ROWS, files) == manifest["batch_sha256"] == summary["batch_sha256"]

    # Postgres: exact counts, the WORM audit row carries the manifest's batch hash, statistics add up
    with psycopg.connect(postgres_dsn) as conn:
        rows, fraud = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM synthetic_transactions"
            " WHERE batch_id='e2e'"
        ).fetchone()  # type: ignore[misc]
        assert (rows, fraud) == (ROWS, manifest["fraud_rows"])
        (audit,) = conn.execute("SELECT sha256_hash FROM synthetic_batches WHERE batch_id='e2e'").fetchone()  # type: ignore[misc]
        assert audit == manifest["batch_sha256"]
        total, amount = conn.execute(
            "SELECT sum(amount), sum(amount) FILTER (WHERE is_fraud) FROM synthetic_transactions"
            " WHERE batch_id='e2e'"
        ).fetchone()  # type: ignore[misc]
        assert isinstance(total, Decimal) and total > amount > 0

    # Kafka: every event arrived once and verifies; the accepted request was audited
    events = consume(kafka_bootstrap, "e2e_tx_events", verify=True, hmac_keys={"e2e": HMAC_KEY.encode()})
    assert events.rejected == 0
    assert events.accepted == ROWS == len(set(events.transaction_ids))
    requests = consume(
        kafka_bootstrap, "e2e_generate_requests", verify=True, hmac_keys={"e2e": HMAC_KEY.encode()}
    )
    assert requests.accepted == 1 and requests.rejected == 0

    # the batch validates where it lies, on S3
    validated = _cli(env, "validate", f"s3://{bucket}/e2e/batch_id=e2e", "--json")
    assert validated.returncode == 0, validated.stdout[-2000:] + validated.stderr[-2000:]
    assert json.loads(validated.stdout)["rows"] == ROWS


def test_wrong_s3_credentials_name_the_sink(env: dict[str, str], s3_endpoint: dict[str, str]) -> None:
    bad = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    result = _cli(
        bad, "generate", "--rows", "1000", "--out", f"s3://{s3_endpoint['bucket']}/bad", timeout=120
    )
    assert result.returncode == 2
    assert "S3" in result.stderr and "SignatureDoesNotMatch" in result.stderr


def test_unreachable_postgres_keeps_the_files_and_resume_completes(
    env: dict[str, str], tmp_path: Any, postgres_dsn: str
) -> None:
    out = str(tmp_path / "out")
    broken = {**env, "FRAUDGEN_POSTGRES_DSN": "postgresql://fraudgen:secret-pw@127.0.0.1:1/none"}
    first = _cli(broken, "generate", "--rows", "20000", "--seed", "4", "--batch-id", "pgdown", "--out", out,
                 "--sink", "postgres")  # fmt: skip
    assert first.returncode == 1
    assert "postgres" in first.stderr and "secret-pw" not in first.stderr + first.stdout
    assert os.path.exists(os.path.join(out, "batch_id=pgdown", "manifest.json"))
    resumed = _cli(env, "persist", "--batch-id", "pgdown", "--out", out, "--sink", "postgres")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with psycopg.connect(postgres_dsn) as conn:
        (rows,) = conn.execute(
            "SELECT count(*) FROM synthetic_transactions WHERE batch_id='pgdown'"
        ).fetchone()  # type: ignore[misc]
    assert rows == 20000
