"""The rule engine as a whole: rates and mix, exact sizes, window, amounts, ids, business rules,
determinism, and request validation."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fraudgen.columnar import compute_signatures, decimal_to_cents
from fraudgen.request import GenerationRequest
from fraudgen.schema import CARD_CHANNELS, SCENARIOS, TRANSACTION_SCHEMA
from fraudgen.simulate import engine
from fraudgen.simulate.engine import SCENARIO_MODULES, generate_shard, generate_table
from fraudgen.simulate.manifest import build_manifest


def _lost_rows_per_shard(name: str) -> int:
    """Rows of a scenario's quota a shard may hand to legit: a remainder smaller than the scenario's
    minimum case is not a case (< MIN_CASE_SIZE rows), and chargeback cases are purchase+chargeback pairs
    (an odd remainder loses one row)."""
    minimum = int(SCENARIO_MODULES[name].MIN_CASE_SIZE)
    return max(minimum - 1, 1 if name == "chargeback_fraud" else 0)


def _scenario_counts(table: pa.Table) -> dict[str, int]:
    counts = table.column("fraud_scenario").value_counts().to_pylist()
    return {c["values"]: c["counts"] for c in counts if c["values"] is not None}


def _check_quota(request: GenerationRequest, table: pa.Table) -> None:
    shards = len(build_manifest(request))
    mix = request.normalised_mix()
    counts = _scenario_counts(table)
    fraud_total = round(request.rows * request.fraud_rate)
    per_scenario = {name: fraud_total * mix.get(name, 0.0) for name in SCENARIOS}
    total_slack = 0
    for name in SCENARIOS:
        # split_evenly rounds each scenario's quota (±1 per shard) before the case granularity applies
        slack = shards * (_lost_rows_per_shard(name) + 1)
        total_slack += shards * _lost_rows_per_shard(name)
        got = counts.get(name, 0)
        assert per_scenario[name] - slack <= got <= per_scenario[name] + shards, (
            name,
            got,
            per_scenario[name],
        )
        if mix.get(name, 0.0) == 0.0:
            assert got == 0, name
    fraud = int(pc.sum(table.column("is_fraud")).as_py() or 0)
    assert fraud_total - total_slack <= fraud <= fraud_total, (fraud, fraud_total)


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.3, 1.0])
def test_fraud_rate_and_default_mix_are_met(rate: float) -> None:
    request = GenerationRequest(rows=20_000, seed=3, fraud_rate=rate, shard_rows=5_000)
    table = generate_table(request)
    assert table.num_rows == request.rows
    _check_quota(request, table)
    if rate == 0.0:
        assert table.column("fraud_scenario").null_count == table.num_rows
    if rate == 1.0:
        assert pc.sum(table.column("is_fraud")).as_py() >= request.rows - 4 * 10


def test_custom_mix_with_zero_weights() -> None:
    mix = {"card_testing": 2.0, "phishing": 1.0, "money_laundering": 0.0, "identity_theft": 0.0}
    request = GenerationRequest(rows=30_000, seed=4, fraud_rate=0.1, scenario_mix=mix, shard_rows=10_000)
    table = generate_table(request)
    _check_quota(request, table)
    assert set(_scenario_counts(table)) == {"card_testing", "phishing"}


@pytest.mark.parametrize(("rows", "shard_rows"), [(1, 1_000), (7, 1_000), (999, 1_000), (2_501, 1_000)])
def test_exact_row_count(rows: int, shard_rows: int) -> None:
    request = GenerationRequest(rows=rows, seed=1, fraud_rate=0.2, shard_rows=shard_rows)
    table = generate_table(request)
    assert table.num_rows == rows
    assert sum(spec.rows for spec in build_manifest(request)) == rows
    assert table.schema.equals(TRANSACTION_SCHEMA)


@pytest.mark.parametrize(
    "window", [timedelta(days=31), timedelta(days=1), timedelta(hours=2), timedelta(seconds=5)]
)
def test_timestamps_stay_inside_the_window(window: timedelta) -> None:
    start = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    request = GenerationRequest(rows=5_000, seed=2, fraud_rate=0.2, start=start, end=start + window)
    table = generate_table(request)
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    lo = int(start.timestamp() * 1_000_000)
    hi = int((start + window).timestamp() * 1_000_000)
    assert ts.min() >= lo and ts.max() < hi
    assert bool((np.diff(ts) >= 0).all())  # each shard is in time order


def test_amounts_positive_two_decimals_and_ids_unique() -> None:
    request = GenerationRequest(rows=20_000, seed=9, fraud_rate=0.1, shard_rows=5_000)
    table = generate_table(request)
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert decimal_to_cents(table.column("amount")).min() > 0
    ids = table.column("transaction_id")
    assert pc.count_distinct(ids).as_py() == table.num_rows
    assert pc.count_distinct(table.column("fraud_case_id")).as_py() == len(
        set(table.column("fraud_case_id").drop_null().to_pylist())
    )


def test_ids_unique_across_batches() -> None:
    first = generate_table(GenerationRequest(rows=5_000, seed=9, batch_id="batch-a"))
    second = generate_table(GenerationRequest(rows=5_000, seed=9, batch_id="batch-b"))
    both = pa.concat_tables([first, second])
    assert pc.count_distinct(both.column("transaction_id")).as_py() == both.num_rows
    assert set(first.column("batch_id").to_pylist()) == {"batch-a"}


def test_business_rules_of_every_row() -> None:
    table = generate_table(GenerationRequest(rows=30_000, seed=21, fraud_rate=0.3))
    df = table.to_pandas()
    card = df["channel"].isin([str(c) for c in CARD_CHANNELS])
    assert df.loc[card, "card_id"].notna().all() and df.loc[~card, "card_id"].isna().all()
    transfer = df["transaction_type"] == "transfer"
    assert (
        df.loc[transfer, "counterparty_id"].notna().all()
        and df.loc[~transfer, "counterparty_id"].isna().all()
    )
    merchant = df["transaction_type"].isin(["purchase", "refund", "chargeback"])
    assert df.loc[merchant, ["merchant_id", "merchant_category"]].notna().all().all()
    assert df.loc[~merchant, ["merchant_id", "merchant_category"]].isna().all().all()
    physical = df["channel"].isin(["card_present", "atm"])
    assert df.loc[physical, ["device_id", "ip_address"]].isna().all().all()
    online = df["channel"].isin(["ecommerce", "mobile_app", "online_banking"])
    salary = (df["channel"] == "online_banking") & (df["transaction_type"] == "deposit")
    assert df.loc[online & ~salary, ["device_id", "ip_address"]].notna().all().all()
    assert df.loc[salary, "device_id"].isna().all()
    octets = df["ip_address"].dropna().str.split(".", expand=True).astype(int)
    private = (
        (octets[0] == 10)
        | ((octets[0] == 192) & (octets[1] == 168))
        | ((octets[0] == 100) & octets[1].between(64, 127))
    )
    assert private.all()
    assert table.column("signature").equals(pa.chunked_array([compute_signatures(table)]))


# --- determinism ------------------------------------------------------------------------------------------


def _parquet_sha256(table: pa.Table) -> str:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return hashlib.sha256(sink.getvalue()).hexdigest()


def test_same_request_same_bytes_different_seed_different_data() -> None:
    request = GenerationRequest(rows=12_000, seed=5, fraud_rate=0.05, shard_rows=4_000)
    first, second = generate_table(request), generate_table(request)
    assert first.equals(second)
    assert _parquet_sha256(first) == _parquet_sha256(second)
    other = generate_table(request.model_copy(update={"seed": 6}))
    assert _parquet_sha256(other) != _parquet_sha256(first)
    assert not pc.any(pc.equal(other.column("signature"), first.column("signature"))).as_py()


def test_shards_do_not_depend_on_what_ran_before() -> None:
    request = GenerationRequest(rows=9_000, seed=8, fraud_rate=0.1, shard_rows=3_000)
    specs = build_manifest(request)
    in_loop = [generate_shard(request, spec) for spec in specs]
    engine.build_merchants.cache_clear()  # a fresh worker: nothing cached
    alone = generate_shard(request, specs[2])
    assert alone.equals(in_loop[2])
    assert pa.concat_tables(in_loop).equals(generate_table(request))


# --- request validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "limit"),
    [
        ({"rows": 0}, "rows", "greater than or equal to 1"),
        ({"rows": -5}, "rows", "greater than or equal to 1"),
        ({"rows": 10, "fraud_rate": -0.1}, "fraud_rate", "greater than or equal to 0"),
        ({"rows": 10, "fraud_rate": 1.5}, "fraud_rate", "less than or equal to 1"),
        ({"rows": 10, "scenario_mix": {"skimming": 1.0}}, "scenario_mix", "known: card_testing"),
        ({"rows": 10, "scenario_mix": {"phishing": -1.0}}, "scenario_mix", ">= 0"),
        ({"rows": 10, "currency": "XYZ"}, "currency", "supported: USD"),
        ({"rows": 10, "countries": ["FR", "ZZ"]}, "countries", "supported: US"),
    ],
)
def test_bad_requests_name_the_field_and_limit(fields: dict[str, object], field: str, limit: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest.model_validate(fields)
    errors = info.value.errors()
    assert [e["loc"][0] for e in errors] == [field]
    assert limit in str(info.value)


def test_end_before_start_is_rejected_with_both_bounds() -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(ValidationError) as info:
        GenerationRequest(rows=10, start=start, end=start - timedelta(days=1))
    message = str(info.value)
    assert "end" in message and "must be after start" in message and "2026-02-01" in message


def test_currency_and_countries_are_applied() -> None:
    table = generate_table(
        GenerationRequest(rows=3_000, seed=1, fraud_rate=0.2, currency="chf", countries=["de"])
    )
    assert set(table.column("currency").to_pylist()) == {"CHF"}
    assert set(table.column("country").to_pylist()) == {"DE"}
