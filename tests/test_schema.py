"""The transaction contract: Arrow ⇄ pydantic ⇄ JSON round trips, conform(), and the seed's signature."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from fraudgen.columnar import (
    cents_text,
    cents_to_decimal,
    compute_signatures,
    decimal_to_cents,
    format_ids,
    format_timestamps_us,
    sha256_hex,
)
from fraudgen.request import GenerationRequest
from fraudgen.schema import TRANSACTION_SCHEMA, Transaction, conform, models_to_table, table_to_models
from fraudgen.simulate.engine import generate_table


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """A small table with every scenario (so every nullable column has nulls and values)."""
    return generate_table(GenerationRequest(rows=3_000, seed=7, fraud_rate=0.3))


def _row(**overrides: object) -> Transaction:
    base: dict[str, object] = {
        "transaction_id": "t1",
        "batch_id": "b1",
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, 600_007, tzinfo=UTC),
        "user_id": "U0000000001",
        "account_id": "A0000000001",
        "amount": Decimal("0.01"),
        "currency": "EUR",
        "transaction_type": "transfer",
        "channel": "mobile_app",
        "status": "approved",
        "country": "FR",
        "latitude": 48.85,
        "longitude": 2.35,
        "is_fraud": False,
        "counterparty_id": "A0000000002",
        "signature": "0" * 64,
    }
    base.update(overrides)
    return Transaction.model_validate(base)


def test_arrow_pydantic_arrow_round_trip(table: pa.Table) -> None:
    models = table_to_models(table)
    assert len(models) == table.num_rows
    back = models_to_table(models)
    assert back.schema.equals(TRANSACTION_SCHEMA)
    assert back.equals(table)
    # the nullable columns really carried both nulls and values through the trip
    for name in ("card_id", "merchant_id", "merchant_category", "counterparty_id", "device_id", "ip_address",
                 "fraud_scenario", "fraud_case_id"):  # fmt: skip
        assert 0 < back.column(name).null_count < back.num_rows, name


def test_pydantic_json_round_trip_keeps_types(table: pa.Table) -> None:
    models = table_to_models(table.slice(0, 400))
    for model in models:
        text = model.model_dump_json()
        again = Transaction.model_validate_json(text)
        assert again == model
        assert isinstance(again.amount, Decimal) and again.amount.as_tuple().exponent == -2
        assert again.timestamp.utcoffset() == timedelta(0)
        body = json.loads(text)
        assert body["timestamp"].endswith("Z")
        assert Decimal(str(body["amount"])) == model.amount
    # JSON → Arrow as well
    rebuilt = models_to_table([Transaction.model_validate_json(m.model_dump_json()) for m in models])
    assert rebuilt.equals(table.slice(0, 400))


def test_json_round_trip_of_nulls_and_exact_decimals() -> None:
    row = _row(amount=Decimal("1234567890123456.78"))
    assert row.card_id is None and row.merchant_id is None and row.fraud_scenario is None
    again = Transaction.model_validate_json(row.model_dump_json())
    assert again == row
    assert again.amount == Decimal("1234567890123456.78")
    table = models_to_table([row, again])
    assert table.column("card_id").null_count == 2
    assert decimal_to_cents(table.column("amount")).tolist() == [123456789012345678] * 2


def test_timestamps_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    row = _row(timestamp=datetime(2026, 1, 2, 4, 4, 5, tzinfo=paris))
    assert row.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row.timestamp.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="timezone-aware"):
        _row(timestamp=datetime(2026, 1, 2, 3, 4, 5))


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", Decimal("0")), ("amount", Decimal("-1.00")), ("amount", Decimal("1.234")),
     ("currency", "eur"), ("merchant_category", "54110"), ("latitude", 91.0), ("channel", "fax"),
     ("fraud_scenario", "unknown")],
)  # fmt: skip
def test_model_rejects_values_outside_the_contract(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        _row(**{field: value})
    assert field in str(info.value)


def test_conform_reorders_and_casts(table: pa.Table) -> None:
    shuffled = table.select(list(reversed(table.column_names)))
    shuffled = shuffled.set_column(
        shuffled.column_names.index("latitude"),
        "latitude",
        pc.cast(shuffled.column("latitude"), pa.float32()),
    )
    shuffled = shuffled.set_column(
        shuffled.column_names.index("channel"), "channel", shuffled.column("channel").dictionary_encode()
    )
    out = conform(shuffled)
    assert out.schema.equals(TRANSACTION_SCHEMA)
    assert out.column("channel").equals(table.column("channel"))


def test_conform_names_the_missing_column(table: pa.Table) -> None:
    with pytest.raises(ValueError, match="signature"):
        conform(table.drop_columns(["signature"]))


def test_conform_names_the_column_that_cannot_be_cast(table: pa.Table) -> None:
    bad = table.set_column(
        table.column_names.index("amount"), "amount", pa.array(["not a number"] * table.num_rows)
    )
    with pytest.raises(ValueError, match="'amount'"):
        conform(bad)
    bad = table.set_column(
        table.column_names.index("is_fraud"), "is_fraud", pa.array(["maybe"] * table.num_rows)
    )
    with pytest.raises(ValueError, match="'is_fraud'"):
        conform(bad)


def test_signature_column_matches_the_model_for_sampled_rows(table: pa.Table) -> None:
    rng = np.random.default_rng(0)
    picked = table.take(rng.choice(table.num_rows, 300, replace=False))
    for model in table_to_models(picked):
        assert model.signature == model.expected_signature()


def test_signature_column_matches_compute_signatures_for_whole_tables(table: pa.Table) -> None:
    assert table.column("signature").equals(pa.chunked_array([compute_signatures(table)]))
    # and it reacts to every field it covers
    changed = table.set_column(
        table.column_names.index("amount"),
        "amount",
        cents_to_decimal(decimal_to_cents(table.column("amount")) + 1),
    )
    assert not pc.any(pc.equal(compute_signatures(changed), compute_signatures(table))).as_py()


def test_signature_recipe_by_hand() -> None:
    row = _row(merchant_id=None, amount=Decimal("12.50"))
    message = "U0000000001|12.50|EUR|2026-01-02T03:04:05.600007Z||transfer"
    assert row.expected_signature() == hashlib.sha256(message.encode()).hexdigest()
    table = models_to_table([row])
    assert compute_signatures(table).to_pylist() == [hashlib.sha256(message.encode()).hexdigest()]


def test_vectorised_formatters_match_python() -> None:
    rng = np.random.default_rng(1)
    micros = np.r_[
        0, 1, 86_399_999_999, 253_402_300_799_999_999, rng.integers(0, 4_000_000_000_000_000, 5_000)
    ]
    expected = [
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for us in micros
    ]
    assert format_timestamps_us(micros).to_pylist() == expected
    cents = np.r_[0, 1, 9, 10, 99, 100, -1, -100, -12345, 10**17 - 1, rng.integers(-(10**9), 10**12, 5_000)]
    assert cents_text(cents).to_pylist() == [
        ("-" if c < 0 else "") + f"{abs(c) // 100}.{abs(c) % 100:02d}" for c in cents
    ]
    nullable = pa.array([5, None, -7], pa.int64())
    assert cents_text(nullable).to_pylist() == ["0.05", None, "-0.07"]
    numbers = rng.integers(0, 10**10, 1_000)
    valid = rng.random(1_000) < 0.3
    ids = format_ids("U", numbers, 10, valid).to_pylist()
    assert ids == [f"U{n:010d}" if v else None for n, v in zip(numbers, valid, strict=True)]
    with pytest.raises(ValueError, match="do not fit"):
        format_ids("U", np.array([10**10]), 10)
    messages = pa.array(["", "a", "x" * 200, "é|ü"])
    assert sha256_hex(messages).to_pylist() == [
        hashlib.sha256(m.encode()).hexdigest() for m in messages.to_pylist()
    ]
