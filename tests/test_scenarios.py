"""Every fraud scenario's signature, asserted on generated data, and that no scenario is trivially separable
from legit behaviour on a single column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudgen.columnar import decimal_to_cents
from fraudgen.request import GenerationRequest
from fraudgen.schema import SCENARIOS
from fraudgen.simulate.engine import generate_table
from fraudgen.world import REPORTING_THRESHOLD

MINUTE = pd.Timedelta(minutes=1)


def _frame(request: GenerationRequest) -> pd.DataFrame:
    table = generate_table(request)
    df = table.to_pandas()
    df["amount"] = decimal_to_cents(table.column("amount")) / 100.0
    df["hour"] = df["timestamp"].dt.hour
    return df


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return _frame(GenerationRequest(rows=60_000, seed=11, fraud_rate=0.05))


@pytest.fixture(scope="module")
def realistic() -> pd.DataFrame:
    """A larger table at a realistic fraud share (each scenario ≈ 0.2–0.5 % of rows) for separability."""
    return _frame(GenerationRequest(rows=150_000, seed=5, fraud_rate=0.02))


def _scenario(df: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = df[df["fraud_scenario"] == name]
    assert len(rows) > 0, name
    assert rows["is_fraud"].all() and rows["fraud_case_id"].notna().all()
    return rows


def _legit(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["is_fraud"]]


def test_labels_are_consistent(df: pd.DataFrame) -> None:
    legit = _legit(df)
    assert legit["fraud_scenario"].isna().all() and legit["fraud_case_id"].isna().all()
    fraud = df[df["is_fraud"]]
    assert set(fraud["fraud_scenario"]) == set(SCENARIOS)
    # a case belongs to exactly one scenario
    assert (fraud.groupby("fraud_case_id")["fraud_scenario"].nunique() == 1).all()


def test_card_testing_bursts(df: pd.DataFrame) -> None:
    rows = _scenario(df, "card_testing")
    assert (rows["channel"] == "ecommerce").all() and (rows["transaction_type"] == "purchase").all()
    with_decline = bursts = cash_outs = 0
    for _, case in rows.sort_values("timestamp").groupby("fraud_case_id"):
        assert case["card_id"].nunique() == 1 and case["card_id"].notna().all()
        assert case["merchant_id"].nunique() <= 4  # one to three test shops, plus the cash-out merchant
        small = case[case["amount"] <= 5.00]
        large = case[case["amount"] > 5.00]
        assert len(small) >= 3
        assert len(large) <= 1
        assert small["timestamp"].max() - small["timestamp"].min() < 60 * MINUTE
        bursts += 1
        with_decline += bool((small["status"] == "declined").any())
        if len(large):  # the larger purchase comes after the burst, 20–90 minutes later
            gap = large["timestamp"].iloc[0] - small["timestamp"].max()
            assert 20 * MINUTE <= gap <= 91 * MINUTE
            cash_outs += 1
    assert with_decline >= 0.85 * bursts
    assert 0 < cash_outs < bursts
    small_status = rows.loc[rows["amount"] <= 5.00, "status"]
    assert 0.45 <= (small_status == "declined").mean() <= 0.8


def test_money_laundering_structuring_and_fan_in_out(df: pd.DataFrame) -> None:
    rows = _scenario(df, "money_laundering")
    assert (rows["amount"] < REPORTING_THRESHOLD).all()
    deposits = rows[rows["transaction_type"] == "deposit"]
    assert len(deposits) > 0
    assert deposits["amount"].between(8_600.0, 9_999.99).all()
    assert (rows["amount"] >= 8_600.0).mean() > 0.5  # most amounts sit just under the threshold
    fan_in_cases = fan_out_cases = 0
    smurfs_per_case = []
    cases = rows.groupby("fraud_case_id")
    for _, case in cases:
        mule_accounts = set(case.loc[case["transaction_type"] == "deposit", "account_id"])
        if not mule_accounts:
            continue
        transfers = case[case["transaction_type"] == "transfer"]
        fan_in = transfers[transfers["counterparty_id"].isin(mule_accounts)]
        fan_out = transfers[transfers["account_id"].isin(mule_accounts)]
        assert not fan_in["account_id"].isin(mule_accounts).any()  # smurfs are other accounts
        fan_in_cases += len(fan_in) > 0
        fan_out_cases += len(fan_out) > 0
        smurfs_per_case.append(fan_in["account_id"].nunique())
    assert fan_in_cases >= 0.5 * cases.ngroups
    assert fan_out_cases >= 0.5 * cases.ngroups
    assert max(smurfs_per_case) >= 3  # fan-in from several accounts into one mule


def test_chargebacks_reference_an_earlier_purchase(df: pd.DataFrame) -> None:
    keys = ["user_id", "card_id", "merchant_id", "amount"]
    chargebacks = df[df["transaction_type"] == "chargeback"].reset_index()
    purchases = df[df["transaction_type"] == "purchase"]
    assert (~chargebacks["is_fraud"]).any() and chargebacks["is_fraud"].any()
    pairs = chargebacks.merge(purchases, on=keys, suffixes=("", "_p"))
    earlier = pairs[pairs["timestamp_p"] < pairs["timestamp"]]
    assert set(earlier["index"]) == set(chargebacks["index"])  # every chargeback has its purchase
    fraud = earlier[earlier["fraud_scenario"] == "chargeback_fraud"]
    same_case = fraud[fraud["fraud_case_id_p"] == fraud["fraud_case_id"]]
    n_fraud = (chargebacks["fraud_scenario"] == "chargeback_fraud").sum()
    assert n_fraud > 0 and same_case["index"].nunique() == n_fraud
    legit = earlier[~earlier["is_fraud"]]
    assert legit["index"].nunique() == (~chargebacks["is_fraud"]).sum()
    assert (~legit["is_fraud_p"]).any()


def _pairs(frame: pd.DataFrame, column: str) -> set[tuple[str, str]]:
    present = frame[frame[column].notna()]
    return set(zip(present["user_id"], present[column], strict=True))


def test_account_takeover_new_device_and_new_payees(df: pd.DataFrame) -> None:
    rows = _scenario(df, "account_takeover")
    legit = _legit(df)
    assert (rows["transaction_type"] == "transfer").all() and rows["device_id"].notna().all()
    assert not (_pairs(rows, "device_id") & _pairs(legit, "device_id"))
    assert not (_pairs(rows, "counterparty_id") & _pairs(legit, "counterparty_id"))
    # the takeover users do have a legit history with their own devices
    assert rows["user_id"].isin(legit["user_id"]).mean() > 0.9
    assert rows["amount"].median() > 3 * legit.loc[legit["transaction_type"] == "transfer", "amount"].median()


def test_phishing_own_device_new_payee(df: pd.DataFrame) -> None:
    rows = _scenario(df, "phishing")
    legit = _legit(df)
    assert (rows["transaction_type"] == "transfer").all() and rows["device_id"].notna().all()
    seen = _pairs(legit, "device_id")
    own = [pair in seen for pair in zip(rows["user_id"], rows["device_id"], strict=True)]
    assert np.mean(own) >= 0.85  # the victim's own device (the rest: an own device not used in this window)
    assert not (_pairs(rows, "counterparty_id") & _pairs(legit, "counterparty_id"))
    # a single new payee per case
    assert (rows.groupby("fraud_case_id")["counterparty_id"].nunique() == 1).all()


def test_identity_theft_has_no_legit_history_and_ramps_up(df: pd.DataFrame) -> None:
    rows = _scenario(df, "identity_theft")
    assert not rows["user_id"].isin(_legit(df)["user_id"]).any()
    assert not rows["user_id"].isin(df.loc[df["fraud_scenario"] != "identity_theft", "user_id"]).any()
    ramps = []
    for _, case in rows.sort_values("timestamp").groupby("fraud_case_id"):
        assert case["user_id"].nunique() == 1
        half = len(case) // 2
        ramps.append(case["amount"].iloc[half:].mean() > case["amount"].iloc[:half].mean())
    assert np.mean(ramps) >= 0.8


def test_merchant_fraud_many_cards_round_amounts_and_disputes(df: pd.DataFrame) -> None:
    rows = _scenario(df, "merchant_fraud")
    for _, case in rows.groupby("fraud_case_id"):
        assert case["merchant_id"].nunique() == 1
        assert case["card_id"].nunique() >= 0.6 * len(case)
    purchases = rows[rows["transaction_type"] == "purchase"]
    round_share = ((purchases["amount"] * 100).round() % 5_000 == 0).mean()
    assert round_share >= 0.3
    assert set(rows["transaction_type"]) == {"purchase", "refund", "chargeback"}


# --- not trivially separable --------------------------------------------------------------------------


def best_stump(values: np.ndarray, label: np.ndarray, categorical: bool) -> tuple[float, float, float]:
    """The best depth-1 split of one column: max over splits of min(precision, recall), with both.

    Numeric columns try every threshold in both directions; categorical ones every one-vs-rest value.
    """
    label = label.astype(bool)
    positives = int(label.sum())
    if categorical:
        _, inverse = np.unique(values, return_inverse=True)
        tp = np.bincount(inverse, weights=label)
        total = np.bincount(inverse)
        precision, recall = tp / total, tp / positives
    else:
        order = np.argsort(values, kind="stable")
        ordered, hits = values[order], label[order]
        cut = np.flatnonzero(np.diff(ordered) != 0)  # split after each of these positions
        below_tp = np.cumsum(hits)[cut]
        below_n = cut + 1
        tp = np.r_[below_tp, positives - below_tp]
        total = np.r_[below_n, len(values) - below_n]
        precision, recall = tp / np.maximum(total, 1), tp / positives
    score = np.minimum(precision, recall)
    best = int(np.argmax(score))
    return float(score[best]), float(precision[best]), float(recall[best])


def test_stump_finds_a_planted_separation() -> None:
    label = np.r_[np.zeros(1000, bool), np.ones(50, bool)]
    assert best_stump(np.r_[np.zeros(1000), np.ones(50)] + 0.0, label, False)[0] == 1.0
    assert best_stump(np.r_[["a"] * 1000, ["b"] * 50], label, True)[0] == 1.0
    noise = np.random.default_rng(0).random(1050)
    assert best_stump(noise, label, False)[0] < 0.3


NUMERIC = ("amount", "hour", "latitude", "longitude")
CATEGORICAL = ("channel", "merchant_category", "transaction_type", "status", "country", "hour", "currency")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_single_column_stump_separates_the_scenario(realistic: pd.DataFrame, scenario: str) -> None:
    subset = realistic[(~realistic["is_fraud"]) | (realistic["fraud_scenario"] == scenario)]
    label = subset["is_fraud"].to_numpy()
    flags = {f"has_{c}": subset[c].notna().to_numpy() for c in ("card_id", "device_id", "counterparty_id")}
    for column in NUMERIC:
        score, precision, recall = best_stump(subset[column].to_numpy(dtype=float), label, False)
        assert score < 0.6, f"{scenario} separable on {column}: precision {precision:.2f} recall {recall:.2f}"
    for column in CATEGORICAL:
        values = subset[column].fillna("<null>").astype(str).to_numpy()
        score, precision, recall = best_stump(values, label, True)
        assert score < 0.6, f"{scenario} separable on {column}: precision {precision:.2f} recall {recall:.2f}"
    for name, values in flags.items():
        score, precision, recall = best_stump(values.astype(str), label, True)
        assert score < 0.6, f"{scenario} separable on {name}: precision {precision:.2f} recall {recall:.2f}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fraud_values_overlap_legit(realistic: pd.DataFrame, scenario: str) -> None:
    legit = _legit(realistic)
    rows = _scenario(realistic, scenario)
    # amounts: a good share inside legit's bulk (0.5th–99.9th percentile: structuring sits in legit's top
    # percent by design, next to cash-business deposits, so the top cut is 99.9)
    low, high = np.percentile(legit["amount"], [0.5, 99.9])
    assert rows["amount"].between(low, high).mean() >= 0.5, scenario
    # every categorical value a scenario uses is common in legit rows too
    for column in ("channel", "merchant_category", "transaction_type", "currency", "country"):
        used = set(rows[column].dropna())
        counts = legit[column].value_counts()
        assert used <= set(counts.index), (
            f"{scenario}: {column} values {used - set(counts.index)} never legit"
        )
        if used:
            assert counts.reindex(sorted(used)).min() >= 20, f"{scenario}: {column} value rare in legit"
    # hours of day: the scenario's hours are hours when legit users transact too
    legit_hours = legit["hour"].value_counts(normalize=True)
    assert legit_hours.reindex(sorted(set(rows["hour"]))).min() > 0.003, scenario
    assert rows["hour"].nunique() >= min(12, len(rows) // 20), scenario
