"""Postgres sink against a real Postgres 15: migrations, idempotent COPY load, WORM audit, statistics view."""

from __future__ import annotations

import os
from decimal import Decimal

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraudgen.sinks import postgres as pgs
from fraudgen.sinks.migrate import available_migrations

pytestmark = pytest.mark.services


@pytest.fixture()
def fresh_db(postgres_dsn: str) -> str:
    """A new empty database on the session server (so whole-table checks see only this test's rows)."""
    name = f"t_{os.urandom(4).hex()}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    pgs.migrate(dsn)
    return dsn


def test_migrate_is_versioned_and_idempotent(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mig_check")
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/mig_check"
    versions = [m.version for m in available_migrations()]
    assert pgs.migrate(dsn) == versions
    assert pgs.migrate(dsn) == []
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == versions
        assert rows[0][1] == available_migrations()[0].checksum
        indexes = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'synthetic_transactions'"
            )
        }
    defs = " ".join(indexes.values())
    assert (
        "UNIQUE INDEX synthetic_transactions_pkey ON public.synthetic_transactions "
        "USING btree (transaction_id)" in defs
    )
    # 002: block-range indexes for the columns that follow the load order, fraud rows only for is_fraud
    assert "btree (user_id)" in defs
    for column in ("batch_id", '"timestamp"'):
        assert f"brin ({column}) WITH (autosummarize='on')" in defs
    assert "btree (is_fraud) WHERE is_fraud" in defs
    with psycopg.connect(dsn) as conn:
        collations = dict(
            conn.execute(
                "SELECT column_name, collation_name FROM information_schema.columns "
                "WHERE table_name = 'synthetic_transactions' AND column_name IN "
                "('transaction_id', 'batch_id', 'user_id')"
            ).fetchall()
        )
    assert collations == {"transaction_id": "C", "batch_id": "C", "user_id": "C"}


def test_load_is_exact_and_retry_never_duplicates(fresh_db: str, make_batch) -> None:
    root, manifest, table = make_batch(50_000, seed=11, files=5)
    batch_id = manifest["batch_id"]
    paths = [f"{root}/batch_id={batch_id}/{f['path']}" for f in manifest["files"]]
    ids = table.column("transaction_id").to_pylist()
    with pgs.connect(fresh_db) as conn:
        assert sum(pgs.load_parquet_file(conn, p, batch_id) for p in paths) == 50_000
        # a retry of every file (as after a crash) inserts nothing
        assert sum(pgs.load_parquet_file(conn, p, batch_id) for p in paths) == 0
        # rows already there, alone or mixed with new ones: only the new ones are inserted
        assert pgs.load_parquet_file(conn, table.slice(0, 10), batch_id) == 0
        conn.execute("DELETE FROM synthetic_transactions WHERE transaction_id = ANY(%s)", (ids[:7],))
        conn.commit()
        assert pgs.load_parquet_file(conn, table.slice(0, 10), batch_id) == 7
        assert pgs.batch_row_counts(conn, batch_id) == (50_000, manifest["fraud_rows"])
        total, tsmin, tsmax, nulls_card, ips = conn.execute(
            'SELECT sum(amount), min("timestamp"), max("timestamp"), '
            "count(*) FILTER (WHERE card_id IS NULL), "
            "count(*) FILTER (WHERE ip_address IS NOT NULL) FROM synthetic_transactions"
        ).fetchone()
        row = conn.execute(
            'SELECT transaction_id, amount, "timestamp", ip_address::text, signature, is_fraud, latitude '
            "FROM synthetic_transactions WHERE transaction_id = %s",
            (table.column("transaction_id")[123].as_py(),),
        ).fetchone()
    cents = pc.sum(pc.cast(table.column("amount"), pa.decimal128(38, 2))).as_py()
    assert total == cents
    assert tsmin == pc.min(table.column("timestamp")).as_py()
    assert tsmax == pc.max(table.column("timestamp")).as_py()
    assert nulls_card == table.column("card_id").null_count
    assert ips == 50_000 - table.column("ip_address").null_count
    expected = table.slice(123, 1).to_pylist()[0]
    assert row[1] == expected["amount"] and isinstance(row[1], Decimal)
    assert row[2] == expected["timestamp"]
    assert (row[3] or "").split("/")[0] == (expected["ip_address"] or "")
    assert (
        row[4] == expected["signature"] and row[5] == expected["is_fraud"] and row[6] == expected["latitude"]
    )


def test_indexes_serve_the_usual_lookups(fresh_db: str, make_batch) -> None:
    """Each indexed column's usual query can use its index (sequential scans disabled to ask the planner
    "can you?" rather than "would you, on this small table?"), and gives the same answer as a scan."""
    _, manifest, table = make_batch(20_000, seed=15, files=4)
    batch_id = manifest["batch_id"]
    start = pc.min(table.column("timestamp")).as_py()
    queries = {
        "synthetic_transactions_batch_id_idx": ("batch_id = %s", (batch_id,)),
        "synthetic_transactions_timestamp_idx": (
            '"timestamp" >= %s AND "timestamp" < %s + interval \'1 day\'',
            (start, start),
        ),
        "synthetic_transactions_user_id_idx": ("user_id = %s", (table.column("user_id")[7].as_py(),)),
        "synthetic_transactions_is_fraud_idx": ("is_fraud", ()),
        "synthetic_transactions_pkey": ("transaction_id = %s", (table.column("transaction_id")[9].as_py(),)),
    }
    with pgs.connect(fresh_db) as conn:
        assert pgs.load_parquet_file(conn, table, batch_id) == 20_000
        conn.execute("ANALYZE synthetic_transactions")
        conn.commit()
        counts = {}
        for index, (where, params) in queries.items():
            sql = f"SELECT count(*) FROM synthetic_transactions WHERE {where}"
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", params))
            assert index in plan, plan
            with_index = conn.execute(sql, params).fetchone()[0]
            conn.execute("SET enable_seqscan = on; SET enable_bitmapscan = off; SET enable_indexscan = off")
            conn.execute("SET enable_indexonlyscan = off")
            assert conn.execute(sql, params).fetchone()[0] == with_index
            conn.execute("RESET ALL")
            counts[index] = with_index
        conn.rollback()
    assert counts["synthetic_transactions_batch_id_idx"] == 20_000
    assert counts["synthetic_transactions_is_fraud_idx"] == manifest["fraud_rows"]
    assert counts["synthetic_transactions_pkey"] == 1
    assert 0 < counts["synthetic_transactions_timestamp_idx"] < 20_000


def test_load_rejects_rows_of_another_batch(fresh_db: str, make_batch) -> None:
    _, _, table = make_batch(2_000, seed=12, files=1)
    with pgs.connect(fresh_db) as conn, pytest.raises(ValueError, match="do not all belong"):
        pgs.load_parquet_file(conn, table, "another-batch")


def test_synthetic_batches_is_worm(fresh_db: str, make_batch) -> None:
    _, manifest, _ = make_batch(2_000, seed=13, files=2)
    pgs.record_batch(fresh_db, manifest, {"note": "first"})
    pgs.record_batch(fresh_db, manifest, {"note": "same hash again: idempotent"})
    with pytest.raises(pgs.BatchConflictError, match="write-once"):
        pgs.record_batch(fresh_db, {**manifest, "batch_sha256": "0" * 64}, {})
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        stored = conn.execute("SELECT sha256_hash, rows, metadata->>'note' FROM synthetic_batches").fetchall()
        assert stored == [(manifest["batch_sha256"], manifest["rows"], "first")]
        for statement in (
            "UPDATE synthetic_batches SET rows = 0",
            "DELETE FROM synthetic_batches",
            "TRUNCATE synthetic_batches",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="write-once"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM synthetic_batches").fetchone() == (1,)


def test_fraud_statistics_matches_pandas(fresh_db: str, make_batch) -> None:
    root, manifest, _ = make_batch(30_000, seed=14, files=3)
    batch_id = manifest["batch_id"]
    with pgs.connect(fresh_db) as conn:
        for f in manifest["files"]:
            pgs.load_parquet_file(conn, f"{root}/batch_id={batch_id}/{f['path']}", batch_id)
        view = pd.DataFrame(
            conn.execute(
                "SELECT tenant_id, day, fraud_scenario, tx_count, fraud_count, day_tx_count, fraud_rate, "
                "total_amount, fraud_amount FROM fraud_statistics"
            ).fetchall(),
            columns=[
                "tenant_id",
                "day",
                "fraud_scenario",
                "tx_count",
                "fraud_count",
                "day_tx_count",
                "fraud_rate",
                "total_amount",
                "fraud_amount",
            ],
        )
    df = pa.concat_tables(
        [pq.read_table(f"{root}/batch_id={batch_id}/{f['path']}") for f in manifest["files"]]
    ).to_pandas()
    df["day"] = df["timestamp"].dt.tz_convert("UTC").dt.date
    df["scenario"] = df["fraud_scenario"].fillna("legit")
    df["fraud_amt"] = df["amount"].where(df["is_fraud"], Decimal(0))
    per = (
        df.groupby(["tenant_id", "day", "scenario"])
        .agg(
            tx_count=("transaction_id", "size"),
            fraud_count=("is_fraud", "sum"),
            total_amount=("amount", "sum"),
            fraud_amount=("fraud_amt", "sum"),
        )
        .reset_index()
    )
    days = (
        per.groupby(["tenant_id", "day"])
        .agg(
            tx_count=("tx_count", "sum"),
            fraud_count=("fraud_count", "sum"),
            total_amount=("total_amount", "sum"),
            fraud_amount=("fraud_amount", "sum"),
        )
        .reset_index()
        .assign(scenario="all")
    )
    expected = pd.concat([per, days])
    expected = expected.merge(days[["tenant_id", "day", "tx_count"]].rename(columns={"tx_count": "day_tx"}))
    assert len(view) == len(expected) > 31
    merged = view.merge(
        expected,
        left_on=["tenant_id", "day", "fraud_scenario"],
        right_on=["tenant_id", "day", "scenario"],
        suffixes=("", "_pd"),
    )
    assert len(merged) == len(view)
    for col in ("tx_count", "fraud_count", "total_amount", "fraud_amount"):
        assert (merged[col] == merged[f"{col}_pd"]).all(), col
    assert (merged["day_tx_count"] == merged["day_tx"]).all()
    rate = merged["fraud_count"].astype(float) / merged["day_tx"]
    assert ((merged["fraud_rate"].astype(float) - rate).abs() < 1e-6).all()
    all_rows = view[view.fraud_scenario == "all"]
    assert (
        int(all_rows.tx_count.sum()) == 30_000 and int(all_rows.fraud_count.sum()) == manifest["fraud_rows"]
    )


def test_binary_copy_round_trips_edge_values(fresh_db: str, make_batch) -> None:
    """The fast path's own numeric and inet encodings, read back by Postgres, for values the generator
    rarely or never emits: the smallest and largest amounts numeric(18,2) holds, round units, IPv6."""
    from fraudgen.columnar import cents_to_decimal

    _, manifest, table = make_batch(8, seed=13, files=1)
    cents = [1, 99, 100, 10_000, 123_456_789, 10**12, 999_999_999_999_999_999, 50]
    ips = ["0.0.0.0", None, "255.255.255.255", "10.1.2.3", "2001:db8::1", None, "192.0.2.45", "fd00::"]
    table = table.set_column(
        table.schema.get_field_index("amount"), "amount", cents_to_decimal(pa.array(cents).to_numpy())
    ).set_column(table.schema.get_field_index("ip_address"), "ip_address", pa.array(ips, pa.string()))
    with pgs.connect(fresh_db) as conn:
        assert pgs.load_parquet_file(conn, table, manifest["batch_id"]) == 8
        got = {
            tid: (amount, ip)
            for tid, amount, ip in conn.execute(
                "SELECT transaction_id, amount, host(ip_address) FROM synthetic_transactions"
            )
        }
    for tid, cent, ip in zip(table.column("transaction_id").to_pylist(), cents, ips, strict=True):
        assert got[tid] == (Decimal(cent).scaleb(-2), ip)


def test_bad_ip_address_fails_before_copy_naming_the_field(fresh_db: str, make_batch) -> None:
    _, manifest, table = make_batch(3, seed=14, files=1)
    bad = pa.array(["10.0.0.1", "10.0.0.256", None], pa.string())
    table = table.set_column(table.schema.get_field_index("ip_address"), "ip_address", bad)
    with pgs.connect(fresh_db) as conn:
        with pytest.raises(ValueError, match=r"ip_address '10\.0\.0\.256'"):
            pgs.load_parquet_file(conn, table, manifest["batch_id"])
        assert pgs.batch_row_counts(conn, manifest["batch_id"]) == (0, 0)
