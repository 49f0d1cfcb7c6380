"""Fidelity and privacy figures of generated rows against the training reference.

* exact copies: a generated row equals a training row when every modelled field matches — label, type,
  channel, status, amount, currency, country, MCC and the time of week to the minute (identifiers and the
  calendar date are never learnt, so comparing them would prove nothing);
* distance to closest record (DCR): mixed distance over the same fields (categorical mismatches count 1,
  |Δ log10 amount|, circular hour-of-week distance in days), generated vs a training sample;
* KS and Anderson-Darling two-sample statistics for amount and hour of day.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.columnar import decimal_to_cents
from fraudgen.llm.codec import DAY_US, HOUR_US, MINUTE_US, category_codes

CATEGORICAL = ("label", "ttype", "channel", "status", "currency", "country", "mcc")


def row_features(table: pa.Table) -> dict[str, np.ndarray]:
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    return {
        **category_codes(table),
        "cents": decimal_to_cents(table.column("amount")),
        "week_minute": ((ts // DAY_US + 3) % 7) * 1440 + (ts % DAY_US) // MINUTE_US,
        "hour": (ts % DAY_US) // HOUR_US,
    }


def content_keys(f: dict[str, np.ndarray]) -> np.ndarray:
    """One uint64 per row over the modelled fields (exact-copy key)."""
    with np.errstate(over="ignore"):
        h = np.full(f["cents"].shape[0], np.uint64(0xCBF29CE484222325))
        for name in (*CATEGORICAL, "cents", "week_minute"):
            h = (h ^ f[name].astype(np.int64).astype(np.uint64)) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return h


def reference_arrays(
    table: pa.Table, rng: np.random.Generator, sample: int = 20_000
) -> dict[str, np.ndarray]:
    """What a model directory keeps about its training data: copy keys and a feature sample (no ids)."""
    f = row_features(table)
    keys = np.unique(content_keys(f))
    pick = np.sort(rng.choice(table.num_rows, size=min(sample, table.num_rows), replace=False))
    return {"keys": keys, **{f"ref_{k}": v[pick] for k, v in f.items()}}


def exact_copies(f: dict[str, np.ndarray], keys: np.ndarray) -> np.ndarray:
    return np.isin(content_keys(f), keys)


def dcr(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray], max_gen: int = 1_000) -> dict[str, float]:
    """Distance to the closest reference record for up to ``max_gen`` generated rows (chunked numpy)."""
    n = min(gen["cents"].shape[0], max_gen)
    if n == 0 or ref["cents"].shape[0] == 0:
        return {"median": float("nan"), "p05": float("nan"), "min": float("nan"), "zero_share": float("nan")}
    g_log = np.log10(np.maximum(gen["cents"][:n], 1))
    r_log = np.log10(np.maximum(ref["cents"], 1))
    best = np.empty(n)
    for lo in range(0, n, 128):
        hi = min(lo + 128, n)
        d = np.abs(g_log[lo:hi, None] - r_log[None, :])
        for name in CATEGORICAL:
            d += gen[name][lo:hi, None] != ref[name][None, :]
        diff = np.abs(gen["week_minute"][lo:hi, None] - ref["week_minute"][None, :])
        d += np.minimum(diff, 10_080 - diff) / 1_440.0
        best[lo:hi] = d.min(axis=1)
    return {
        "median": float(np.median(best)),
        "p05": float(np.percentile(best, 5)),
        "min": float(best.min()),
        "zero_share": float(np.mean(best == 0)),
    }


def two_sample(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """KS and k-sample Anderson-Darling statistics (p-values as scipy gives them)."""
    from scipy import stats

    if a.size < 2 or b.size < 2:
        return {"ks": None, "ks_p": None, "ad": None, "ad_p": None}
    ks = stats.ks_2samp(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ad = stats.anderson_ksamp([a, b])
    return {
        "ks": round(float(ks.statistic), 5),
        "ks_p": float(ks.pvalue),
        "ad": round(float(ad.statistic), 4),
        "ad_p": float(ad.pvalue),
    }


def fidelity(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """Amount and hour-of-day comparisons, overall (the label mix of ``gen`` and ``ref`` may differ)."""
    return {
        "amount": two_sample(gen["cents"] / 100.0, ref["cents"] / 100.0),
        "hour": two_sample(gen["hour"].astype(float), ref["hour"].astype(float)),
    }
