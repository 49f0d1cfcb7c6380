"""Per-row verdicts for generated rows: which rows must be replaced by rule rows, and why.

``fraudgen.validate.stage.validate_table`` gives the batch verdict (counts and examples per check) that
the engine reports for the final table; replacing rows needs a *per-row* answer, so the same contract and
business rules (DESIGN.md, ``fraudgen.validate.rules``) are evaluated here as one reason per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.columnar import compute_signatures, decimal_to_cents
from fraudgen.request import GenerationRequest
from fraudgen.schema import (
    CARD_CHANNELS,
    CHANNELS,
    COUNTERPARTY_TYPES,
    MERCHANT_TYPES,
    SCENARIOS,
    TRANSACTION_TYPES,
)
from fraudgen.validate.rules import SCENARIO_TYPES
from fraudgen.world import COUNTRY_CODES, CURRENCY_CODES, MCC_CODES, REPORTING_THRESHOLD


def _isin(table: pa.Table, name: str, values: object) -> np.ndarray:
    return np.asarray(
        pc.fill_null(pc.is_in(table.column(name), value_set=pa.array(values, pa.string())), False)
    )


def _valid(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.is_valid(table.column(name)))


def row_failures(table: pa.Table, request: GenerationRequest) -> np.ndarray:
    """One reason per row ('' when the row passes), first failing rule wins. Vectorised."""
    n = table.num_rows
    reasons = np.full(n, "", dtype=object)
    if n == 0:
        return reasons

    def flag(name: str, bad: np.ndarray) -> None:
        reasons[(reasons == "") & bad] = name

    ttype = table.column("transaction_type")
    channel = table.column("channel")
    scenario = table.column("fraud_scenario")
    cents = decimal_to_cents(table.column("amount"))
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    start = int(request.start.timestamp() * 1_000_000)
    end = int(request.end.timestamp() * 1_000_000)
    flag(
        "schema.enum",
        ~(_isin(table, "transaction_type", TRANSACTION_TYPES) & _isin(table, "channel", CHANNELS)),
    )
    flag("schema.currency", ~_isin(table, "currency", CURRENCY_CODES))
    flag("schema.country", ~_isin(table, "country", COUNTRY_CODES))
    flag("schema.mcc", _valid(table, "merchant_category") & ~_isin(table, "merchant_category", MCC_CODES))
    flag("schema.amount", cents <= 0)
    flag("schema.timestamp_window", (ts < start) | (ts >= end))
    is_fraud = np.asarray(table.column("is_fraud"))
    has_scenario = _valid(table, "fraud_scenario")
    flag("schema.label", (is_fraud != has_scenario) | (is_fraud != _valid(table, "fraud_case_id")))
    card_ch = _isin(table, "channel", sorted(CARD_CHANNELS))
    flag("rules.card_id_by_channel", card_ch != _valid(table, "card_id"))
    flag(
        "rules.counterparty_by_type",
        _isin(table, "transaction_type", sorted(COUNTERPARTY_TYPES)) != _valid(table, "counterparty_id"),
    )
    merchant_t = _isin(table, "transaction_type", sorted(MERCHANT_TYPES))
    flag(
        "rules.merchant_by_type",
        (merchant_t != _valid(table, "merchant_id")) | (merchant_t != _valid(table, "merchant_category")),
    )
    online = _isin(table, "channel", ["ecommerce", "mobile_app", "online_banking"])
    salary = np.asarray(
        pc.fill_null(pc.and_(pc.equal(channel, "online_banking"), pc.equal(ttype, "deposit")), False)
    )
    needs_device = online & ~salary
    flag(
        "rules.device_by_channel",
        (needs_device != _valid(table, "device_id")) | (needs_device != _valid(table, "ip_address")),
    )
    for name, types in SCENARIO_TYPES.items():
        rows = np.asarray(pc.fill_null(pc.equal(scenario, name), False))
        flag("rules.scenario_transaction_type", rows & ~_isin(table, "transaction_type", list(types)))
    testing = np.asarray(pc.fill_null(pc.equal(scenario, "card_testing"), False))
    flag(
        "rules.card_testing_channel",
        testing & ~np.asarray(pc.fill_null(pc.equal(channel, "ecommerce"), False)),
    )
    laundering = np.asarray(pc.fill_null(pc.equal(scenario, "money_laundering"), False))
    flag("rules.money_laundering_threshold", laundering & (cents >= round(REPORTING_THRESHOLD * 100)))
    if request.countries:
        flag("request.country", ~_isin(table, "country", request.countries))
    if request.currency:
        flag("request.currency", ~_isin(table, "currency", [request.currency]))
    flag("rules.chargeback_without_purchase", _orphan_chargebacks(table, cents, ts))
    flag("schema.signature", ~np.asarray(pc.equal(table.column("signature"), compute_signatures(table))))
    unknown = has_scenario & ~_isin(table, "fraud_scenario", SCENARIOS)
    flag("schema.scenario", unknown)
    return reasons


def _orphan_chargebacks(table: pa.Table, cents: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Chargebacks with no earlier purchase of the same user, card, merchant, amount and case."""
    keys = ["user_id", "card_id", "merchant_id", "fraud_case_id"]
    df = pd.DataFrame({k: table.column(k).to_pandas().fillna("") for k in keys})
    df["cents"], df["ts"] = cents, ts
    df["ttype"] = table.column("transaction_type").to_pandas()
    cb = df[df.ttype == "chargeback"]
    if cb.empty:
        return np.zeros(len(df), bool)
    first = df[df.ttype == "purchase"].groupby([*keys, "cents"], sort=False).ts.min().rename("p_ts")
    joined = cb.join(first, on=[*keys, "cents"])
    orphan = ~(joined.p_ts < joined.ts).to_numpy()
    out = np.zeros(len(df), bool)
    out[cb.index.to_numpy()[orphan]] = True
    return out
