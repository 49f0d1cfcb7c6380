"""Persistence actors against real servers: happy path, resume after Postgres/Kafka faults, unreachable."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from fraudgen.config import Settings
from fraudgen.devservices import KafkaBroker, PostgresServer, free_ports
from fraudgen.sinks import kafka_verify as kv
from fraudgen.sinks import postgres as pgs
from fraudgen.sinks.jobs import PROGRESS_FILE, get_jobs
from fraudgen.sinks.persist import db_migrate_command, persist_batch, persist_command

pytestmark = pytest.mark.services
KEY = "persist-test-key-0123456789"


def _settings(**kwargs: object) -> Settings:
    base: dict[str, object] = {
        "kafka_hmac_key": KEY,
        "kafka_hmac_key_id": "k1",
        "persist_retry_attempts": 2,
        "persist_retry_max_wait_s": 0.2,
        "kafka_message_timeout_ms": 3000,
        "kafka_partitions": 3,
    }
    return Settings(**{**base, **kwargs})


def _fresh_db(postgres_dsn: str) -> str:
    name = f"p_{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_dsn.rsplit("/", 1)[0] + f"/{name}"


def _file_hashes(root: str, manifest: dict) -> list[str]:
    d = Path(root) / f"batch_id={manifest['batch_id']}"
    return [hashlib.sha256((d / f["path"]).read_bytes()).hexdigest() for f in manifest["files"]]


def _progress(root: str, batch_id: str) -> dict:
    path = Path(root) / f"batch_id={batch_id}" / PROGRESS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def test_persist_both_sinks_then_rerun_is_a_no_op(
    ray_session, postgres_dsn, kafka_bootstrap, make_batch
) -> None:
    dsn = _fresh_db(postgres_dsn)
    topic = f"events-{time.time_ns()}"
    settings = _settings(postgres_dsn=dsn, kafka_bootstrap_servers=kafka_bootstrap, kafka_topic_events=topic)
    root, manifest, table = make_batch(50_000, seed=31, files=5)
    batch_id = manifest["batch_id"]
    results = persist_batch(root, batch_id, settings, {"postgres", "kafka"})
    assert {k: (r.state, r.rows_done, r.rows_written_now) for k, r in results.items()} == {
        "postgres": ("done", 50_000, 50_000),
        "kafka": ("done", 50_000, 50_000),
    }
    with pgs.connect(dsn) as conn:
        assert pgs.batch_row_counts(conn, batch_id) == (50_000, manifest["fraud_rows"])
        audit = conn.execute(
            "SELECT sha256_hash, rows FROM synthetic_batches WHERE batch_id = %s", (batch_id,)
        ).fetchone()
        jobs = get_jobs(conn, batch_id)
    assert audit == (manifest["batch_sha256"], 50_000)
    assert {s: (j["state"], j["rows_done"], j["error"]) for s, j in jobs.items()} == {
        "postgres": ("done", 50_000, None),
        "kafka": ("done", 50_000, None),
    }
    consumed = kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": KEY.encode()})
    assert consumed.accepted == 50_000 and consumed.rejected == 0
    assert sorted(consumed.transaction_ids) == sorted(table.column("transaction_id").to_pylist())
    # a second persist finds every file done: nothing re-sent, nothing duplicated
    again = persist_batch(root, batch_id, settings, {"postgres", "kafka"})
    assert all(r.state == "done" and r.rows_written_now == 0 for r in again.values())
    assert kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": KEY.encode()}).accepted == 50_000


def test_postgres_stopped_mid_load_then_resume_is_exact(ray_session, make_batch) -> None:
    server = PostgresServer()
    dsn = server.start()
    try:
        pgs.migrate(dsn)
        root, manifest, table = make_batch(50_000, seed=32, files=5)
        batch_id = manifest["batch_id"]
        settings = _settings(postgres_dsn=dsn, persist_pool_size=1)
        # hold an uncommitted row of file 2: the loader commits files 0 and 1, then blocks inside file 2
        blocker = pgs.connect(dsn)
        blocker.execute("SELECT 1")
        pgs.load_parquet_file(blocker, table.slice(20_000, 1), batch_id)
        box: dict = {}
        worker = threading.Thread(
            target=lambda: box.update(persist_batch(root, batch_id, settings, {"postgres"}))
        )
        worker.start()
        with psycopg.connect(dsn, autocommit=True) as watch:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ~ '^(COPY|INSERT INTO) synthetic_transactions'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the loader never blocked on file 2")
            committed = watch.execute("SELECT count(*) FROM synthetic_transactions").fetchone()
        assert committed == (20_000,)
        server.stop()  # immediate: the in-flight file-2 transaction is lost
        worker.join(120)
        failed = box["postgres"]
        assert failed.state == "failed" and failed.error.startswith("postgres sink:")
        assert failed.rows_done == 20_000 and failed.files_done == 2
        server.start()
        resumed = persist_batch(root, batch_id, settings, {"postgres"})["postgres"]
        assert (resumed.state, resumed.rows_done, resumed.rows_written_now) == ("done", 50_000, 30_000)
        with psycopg.connect(dsn) as conn:
            count, distinct, total = conn.execute(
                "SELECT count(*), count(DISTINCT transaction_id), sum(amount) FROM synthetic_transactions"
            ).fetchone()
            jobs = get_jobs(conn, batch_id)
        assert count == distinct == 50_000
        assert total == sum(r["amount"] for r in table.select(["amount"]).to_pylist())
        assert jobs["postgres"]["state"] == "done" and jobs["postgres"]["error"] is None
    finally:
        server.destroy()


def test_kafka_broker_restarted_mid_publish_then_resume(ray_session, make_batch) -> None:
    broker = KafkaBroker()
    broker.start()
    try:
        root, manifest, table = make_batch(50_000, seed=33, files=5)
        batch_id = manifest["batch_id"]
        settings = _settings(
            kafka_bootstrap_servers=broker.bootstrap, persist_pool_size=1, kafka_rate_limit_per_second=20_000
        )
        box: dict = {}
        worker = threading.Thread(
            target=lambda: box.update(persist_batch(root, batch_id, settings, {"kafka"}))
        )
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = _progress(root, batch_id).get("sinks", {}).get("kafka", {}).get("files", {})
            if any(f["rows_done"] == f["rows"] for f in files.values()):
                break
            time.sleep(0.02)
        broker.stop()  # SIGKILL mid-publish: tansu memory storage loses everything it held
        worker.join(120)
        failed = box["kafka"]
        assert failed.state == "failed" and failed.error.startswith("kafka sink:")
        assert 10_000 <= failed.rows_done < 50_000
        progress = _progress(root, batch_id)["sinks"]["kafka"]
        assert progress["state"] == "failed"
        broker.start()  # same port, new empty broker
        resumed = persist_batch(
            root, batch_id, settings.model_copy(update={"kafka_rate_limit_per_second": None}), {"kafka"}
        )["kafka"]
        assert (resumed.state, resumed.rows_done) == ("done", 50_000)
        assert resumed.rows_written_now == 50_000 - failed.rows_done
        consumed = kv.consume(broker.bootstrap, verify=True, hmac_keys={"k1": KEY.encode()})
        # the new broker holds exactly the rows never acknowledged before the restart: none twice
        assert consumed.accepted == 50_000 - failed.rows_done == len(set(consumed.transaction_ids))
        all_ids = set(table.column("transaction_id").to_pylist())
        assert set(consumed.transaction_ids) <= all_ids
    finally:
        broker.destroy()


def test_unreachable_sinks_fail_clearly_and_keep_the_parquet(ray_session, make_batch) -> None:
    root, manifest, _ = make_batch(5_000, seed=34, files=2)
    before = _file_hashes(root, manifest)
    pg_port, kafka_port = free_ports(2)
    settings = _settings(
        postgres_dsn=f"postgresql://fraudgen:s3cret@127.0.0.1:{pg_port}/postgres",
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
    )
    results = persist_batch(root, manifest["batch_id"], settings, {"postgres", "kafka"})
    assert results["postgres"].state == "failed" and results["postgres"].error.startswith("postgres sink:")
    assert "s3cret" not in results["postgres"].error
    assert results["kafka"].state == "failed" and "kafka sink: broker" in results["kafka"].error
    assert _file_hashes(root, manifest) == before
    assert persist_command(manifest["batch_id"], root, "postgres", settings) == 1
    assert persist_command("no-such-batch", root, "postgres", settings) == 2
    assert persist_command(manifest["batch_id"], root, None, Settings()) == 2
    assert db_migrate_command(settings) == 1
    assert db_migrate_command(Settings()) == 2
