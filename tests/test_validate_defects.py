"""Planted defects: each is caught and named by validation; the clean batch passes every gate."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudgen.columnar import cents_to_decimal, compute_signatures, decimal_to_cents
from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_table
from fraudgen.validate.stage import GateConfig, drop_duplicates, validate_table

REQUEST = GenerationRequest(rows=30_000, seed=11)
WINDOW = (REQUEST.start, REQUEST.end)


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    return generate_table(REQUEST)


def run(table: pa.Table, **kwargs: object):  # type: ignore[no-untyped-def]
    return validate_table(
        table,
        window=WINDOW,
        expected_fraud_rate=REQUEST.fraud_rate,
        expected_mix=REQUEST.scenario_mix,
        **kwargs,
    )


def gates_of(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.gate for f in report.failures}


def replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_clean_batches_pass_every_gate(seed: int) -> None:
    request = GenerationRequest(rows=30_000, seed=seed)
    table = generate_table(request)
    report = validate_table(
        table,
        window=(request.start, request.end),
        expected_fraud_rate=request.fraud_rate,
        expected_mix=request.scenario_mix,
    )
    assert report.passed, report.failure_lines()
    assert report.metrics["schema_errors"] == 0 and report.metrics["rule_violations"] == 0
    assert report.metrics["signature_checked"] > 0 and report.metrics["signature_mismatch"] == 0
    assert report.fidelity["score"] > GateConfig().min_fidelity
    assert len(report.statistics) >= 10  # amount/hour for legit and scenarios, per-user features


def test_duplicated_rows(clean: pa.Table) -> None:
    table = pa.concat_tables([clean, clean.slice(100, 25)])
    report = run(table)
    assert "duplicates" in gates_of(report)
    assert report.dedup["duplicate_rows"] == 25
    deduped, dropped = drop_duplicates(table)
    assert dropped == 25 and deduped.num_rows == clean.num_rows
    assert "duplicates" not in gates_of(run(table, gates=GateConfig(remove_duplicates=True)))


def test_negative_and_three_decimal_amounts(clean: pa.Table) -> None:
    cents = decimal_to_cents(clean.column("amount"))
    values = [Decimal(int(c)) / 100 for c in cents]
    values[10] = Decimal("-12.50")
    values[20] = Decimal("12.345")
    table = replace(clean, "amount", pa.array(values, pa.decimal128(18, 3)))
    report = run(table)
    assert "schema" in gates_of(report)
    assert report.checks["schema.amount_not_positive"]["count"] == 1
    assert report.checks["schema.amount_precision"]["count"] == 1
    assert "amount" in report.column_errors  # decimal128(18,3) is itself a type error
    as_float = replace(clean, "amount", pa.array(np.where(np.arange(len(cents)) == 5, -1.0, cents / 100.0)))
    report = run(as_float)
    assert report.checks["schema.amount_not_positive"]["count"] == 1 and "amount" in report.column_errors


def test_unknown_currency_and_bad_enum(clean: pa.Table) -> None:
    n = clean.num_rows
    currency = pc.if_else(pa.array(np.arange(n) % 1000 == 7), "XYZ", clean.column("currency"))
    channel = pc.if_else(pa.array(np.arange(n) == 3), "telepathy", clean.column("channel"))
    report = run(replace(replace(clean, "currency", currency), "channel", channel))
    assert "schema" in gates_of(report)
    assert report.checks["schema.currency"]["count"] == int(np.sum(np.arange(n) % 1000 == 7))
    assert "'XYZ'" in report.checks["schema.currency"]["examples"]
    assert report.checks["schema.channel"]["count"] == 1


def test_timestamps_outside_window(clean: pa.Table) -> None:
    ts = pc.cast(clean.column("timestamp"), pa.int64()).to_numpy().copy()
    ts[:4] = int((REQUEST.end + timedelta(days=3)).timestamp() * 1e6)
    ts[4] = int((REQUEST.start - timedelta(seconds=1)).timestamp() * 1e6)
    table = replace(clean, "timestamp", pa.array(ts).cast(pa.timestamp("us", tz="UTC")))
    report = run(table)
    assert "schema" in gates_of(report)
    assert report.checks["schema.timestamp_window"]["count"] == 5


def test_shifted_amount_distribution_of_one_scenario(clean: pa.Table) -> None:
    testing = np.asarray(pc.equal(clean.column("fraud_scenario"), "card_testing").fill_null(False))
    cents = decimal_to_cents(clean.column("amount"))

    def shifted(mask: np.ndarray) -> pa.Table:
        table = replace(clean, "amount", cents_to_decimal(np.where(mask, cents * 3, cents)))
        return replace(table, "signature", compute_signatures(table))  # a consistent, well-formed batch

    report = run(shifted(testing))
    assert "distribution.card_testing.log_amount" in gates_of(report), report.failure_lines()
    assert report.metrics["signature_mismatch"] == 0
    report = run(shifted(np.asarray(pc.invert(clean.column("is_fraud")))))
    assert "distribution.legit.log_amount" in gates_of(report)


def test_chargeback_without_purchase(clean: pa.Table) -> None:
    rows = clean.select(["transaction_type", "fraud_case_id", "fraud_scenario"]).to_pylist()
    case = next(
        r["fraud_case_id"]
        for r in rows
        if r["transaction_type"] == "chargeback" and r["fraud_scenario"] == "chargeback_fraud"
    )
    purchase = [
        i for i, r in enumerate(rows) if r["fraud_case_id"] == case and r["transaction_type"] == "purchase"
    ]
    keep = np.ones(clean.num_rows, dtype=bool)
    keep[purchase] = False
    report = run(clean.filter(pa.array(keep)))
    assert "rules" in gates_of(report)
    assert report.checks["rules.chargeback_without_purchase"]["count"] == len(purchase)


def test_copies_of_training_rows(clean: pa.Table) -> None:
    training = generate_table(GenerationRequest(rows=20_000, seed=99))
    holdout = generate_table(GenerationRequest(rows=5_000, seed=98))
    assert run(clean, training_rows=training, holdout_rows=holdout).passed
    legit_purchases = np.flatnonzero(
        np.asarray(
            pc.and_(
                pc.equal(training.column("transaction_type"), "purchase"),
                pc.invert(training.column("is_fraud")),
            )
        )
    )[:12]
    copies = training.take(pa.array(legit_purchases))
    table = pa.concat_tables([clean, copies])
    report = run(table, training_rows=training, holdout_rows=holdout)
    assert "memorisation.exact_copies" in gates_of(report)
    assert report.memorisation["exact_copies"] == 12
    assert "closer_than_holdout_p5" in report.memorisation


def test_wrong_types_and_missing_columns_are_reported(clean: pa.Table) -> None:
    table = clean.drop_columns(["device_id"])
    table = replace(table, "is_fraud", pc.cast(table.column("is_fraud"), pa.string()))
    report = run(table)
    assert "schema" in gates_of(report)
    assert "device_id" in report.column_errors and "is_fraud" in report.column_errors


def test_known_signatures_from_earlier_batches(clean: pa.Table) -> None:
    earlier = clean.column("signature").slice(0, 3).to_pylist()
    report = run(clean, known_signatures=set(earlier))
    assert "duplicates_earlier_batches" in gates_of(report)
    assert report.dedup["known_signature_rows"] == 3
