"""Distribution checks: bounded samples per block, then KS / Anderson-Darling and a fidelity score.

Blocks keep, per group (legit and each scenario), the rows with the smallest priority, where the priority is
the row's signature prefix (a uniform 64-bit number for real SHA256 signatures). Merging two such samples
is exactly the sample of the union, so the statistics neither depend on block boundaries nor grow with the
batch. Per-user features (rows per user, inter-arrival time) come from the complete histories of the
users with the smallest user hash (see ``summary.bottom_k_users``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fraudgen.schema import SCENARIOS
from fraudgen.validate.hashing import unique_counts
from fraudgen.validate.schema_checks import Columns
from fraudgen.validate.summary import AMOUNT_BINS, LEGIT, BlockSummary, bottom_k_users

GROUPS: tuple[str, ...] = (LEGIT, *SCENARIOS)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
_AMOUNT_NBINS = AMOUNT_BINS.size - 1
#: categorical columns compared with total-variation distance in the fidelity score
CATEGORICAL = ("ttype", "channel", "status", "currency", "country")
#: numeric columns whose correlation matrix the fidelity score compares
CORRELATED = ("log_amount", "hour", "lat", "lon", "fraud")


def sample_block(cols: Columns, summary: BlockSummary, user_hash: np.ndarray, seed: int) -> None:
    """Histograms on every row; bounded samples per group; complete rows of the block's bottom-k users."""
    n = cols.n
    if n == 0 or cols.ts is None:
        return
    group = np.where(
        cols.scenario >= 0, cols.scenario.astype(np.int64) + 1, np.where(cols.scenario == -1, 0, -1)
    )
    hour = (cols.ts % DAY_US) // HOUR_US
    fraud = group > 0
    for name, mask in (("legit", group == 0), ("fraud", fraud)):
        counts = np.bincount(hour[mask], minlength=24)[:24]
        summary.hourly[name] = summary.hourly.get(name, np.zeros(24, np.int64)) + counts
    amount = cols.amount if cols.amount is not None else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.floor((np.log10(np.where(amount > 0, amount, 1e-9)) + 2.0) * 6.0) + 1
    level = np.where(amount > 0, np.clip(level, 1, _AMOUNT_NBINS - 1), 0).astype(np.int64)
    known = group >= 0
    flat = np.bincount(group[known] * _AMOUNT_NBINS + level[known], minlength=len(GROUPS) * _AMOUNT_NBINS)
    flat = flat.reshape(len(GROUPS), _AMOUNT_NBINS)
    rows_per_group = flat.sum(axis=1)
    for g, name in enumerate(GROUPS):
        if rows_per_group[g]:
            summary.amount_hist[name] = (
                summary.amount_hist.get(name, np.zeros(_AMOUNT_NBINS, np.int64)) + flat[g]
            )
            summary.scenario_rows[name] = summary.scenario_rows.get(name, 0) + int(rows_per_group[g])
    if cols.signature_keys.size == n:
        priority = cols.signature_keys
    else:
        priority = np.random.default_rng([seed, summary.blocks, n]).integers(0, 2**63, n).astype(np.uint64)
    k = summary.sample_size
    for g, name in enumerate(GROUPS):
        if not rows_per_group[g]:
            continue
        rows = np.flatnonzero(group == g)
        if rows.size > k:
            rows = np.sort(rows[np.argpartition(priority[rows], k - 1)[:k]])
        part = _features(cols, rows, priority, amount)
        previous = summary.samples.get(name)
        if previous:
            from fraudgen.validate.summary import bottom_k, concat_columns

            part = bottom_k(concat_columns([previous, part]), k)
        summary.samples[name] = part
    user_rows = {"user": user_hash, "ts": cols.ts}
    summary.user_rows = bottom_k_users(user_rows, summary.user_sample_size)
    if summary.user_rows is user_rows:
        summary.user_rows = {"user": user_hash.copy(), "ts": cols.ts.copy()}


def _features(
    cols: Columns, rows: np.ndarray, priority: np.ndarray, amount: np.ndarray
) -> dict[str, np.ndarray]:
    ts = cols.ts[rows] if cols.ts is not None else np.zeros(rows.size, np.int64)
    a = amount[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_amount = np.log10(np.where(a > 0, a, np.nan))
    return {
        "priority": priority[rows],
        "amount": a,
        "log_amount": log_amount,
        "hour": (ts % DAY_US) / HOUR_US,
        "weekday": ((ts // DAY_US + 3) % 7).astype(np.int8),
        "ts": ts,
        "lat": cols.lat[rows] if cols.lat is not None else np.full(rows.size, np.nan),
        "lon": cols.lon[rows] if cols.lon is not None else np.full(rows.size, np.nan),
        "ttype": cols.ttype[rows],
        "channel": cols.channel[rows],
        "status": cols.status[rows],
        "currency": cols.currency[rows],
        "country": cols.country[rows],
        "fraud": (cols.scenario[rows] >= 0).astype(np.float64),
    }


# --- evaluation -------------------------------------------------------------------------------------------


def user_features(summary: BlockSummary) -> dict[str, np.ndarray]:
    """Rows per user and log10 inter-arrival seconds from the sampled users' complete histories."""
    rows = summary.user_rows
    if not rows or rows["user"].size == 0:
        return {"rows_per_user": np.zeros(0), "log_interarrival_s": np.zeros(0)}
    order = np.lexsort((rows["ts"], rows["user"]))
    user, ts = rows["user"][order], rows["ts"][order]
    _, counts = unique_counts(user)
    same = user[1:] == user[:-1]
    gaps = (ts[1:] - ts[:-1])[same] / 1e6
    return {
        "rows_per_user": counts.astype(np.float64),
        "log_interarrival_s": np.log10(np.maximum(gaps, 1e-3)),
    }


def global_sample(summary: BlockSummary) -> dict[str, np.ndarray]:
    """All groups' samples pooled with weights restoring the batch's group shares (by resampling)."""
    parts = []
    total = sum(summary.scenario_rows.values()) or 1
    for name, sample in summary.samples.items():
        m = sample["priority"].size
        if m == 0:
            continue
        share = summary.scenario_rows.get(name, 0) / total
        take = max(1, round(share * summary.sample_size)) if share > 0 else 0
        take = min(take, m)
        order = np.argsort(sample["priority"], kind="stable")[:take]
        parts.append({k: v[order] for k, v in sample.items()})
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


#: scenarios whose amounts are shared or linked within a case (a chargeback repeats its purchase, a
#: bust-out grows from one base, a colluding shop splits one sale); card-testing and structuring amounts
#: are drawn per row. Time of day is shared within a case for every scenario.
AMOUNT_CLUSTERED = frozenset(
    {"identity_theft", "merchant_fraud", "account_takeover", "phishing", "chargeback_fraud"}
)


def cluster_size(summary: BlockSummary, group: str) -> float:
    """Mean rows per fraud case of a scenario (1 for legit): rows of a case are not independent draws."""
    parts = summary.case_keys_count(group)
    rows = summary.scenario_rows.get(group, 0)
    return max(1.0, rows / parts) if parts else 1.0


def compare(
    a: np.ndarray, b: np.ndarray, min_rows: int, cluster_a: float = 1.0, cluster_b: float = 1.0
) -> dict[str, Any] | None:
    """Two-sample KS and k-sample Anderson-Darling of finite values; None when a side is too small.

    ``ks_pvalue`` is the asymptotic p-value at the effective sample sizes (rows / mean case size): the
    rows of one card-testing burst share their hour and amount range, so counting them as independent
    draws would make every small scenario look significantly different.
    """
    from scipy import stats  # imported here: the block workers never need scipy (~0.7 s to import)

    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size < min_rows or b.size < min_rows:
        return None
    ks = stats.ks_2samp(a, b)
    n_a, n_b = max(a.size / cluster_a, 1.0), max(b.size / cluster_b, 1.0)
    p_eff = float(stats.kstwobign.sf(ks.statistic * np.sqrt(n_a * n_b / (n_a + n_b))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ad = stats.anderson_ksamp([a, b], method=None)
            ad_stat, ad_p = float(ad.statistic), float(ad.pvalue)
        except (ValueError, TypeError):
            ad_stat, ad_p = float("nan"), float("nan")
    return {
        "n": int(a.size),
        "n_reference": int(b.size),
        "n_effective": round(n_a, 1),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": p_eff,
        "ks_pvalue_rows": float(ks.pvalue),
        "ad_statistic": ad_stat,
        "ad_pvalue": ad_p,
    }


def distribution_tests(summary: BlockSummary, reference: BlockSummary, min_rows: int) -> list[dict[str, Any]]:
    """KS/AD per (group, feature): amount and hour per scenario; per-user features overall."""
    out: list[dict[str, Any]] = []
    for name in GROUPS:
        mine, theirs = summary.samples.get(name), reference.samples.get(name)
        if not mine or not theirs:
            continue
        for feature in ("log_amount", "hour"):
            clustered = feature == "hour" or name in AMOUNT_CLUSTERED
            ca, cb = (cluster_size(summary, name), cluster_size(reference, name)) if clustered else (1.0, 1.0)
            result = compare(mine[feature], theirs[feature], min_rows, ca, cb)
            if result:
                out.append({"group": name, "feature": feature, **result})
    mine_u, theirs_u = user_features(summary), user_features(reference)
    for feature in ("rows_per_user", "log_interarrival_s"):
        result = compare(mine_u[feature], theirs_u[feature], min_rows)
        if result:
            out.append({"group": "all", "feature": feature, **result})
    return out


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    values = np.union1d(a, b)
    pa_ = np.searchsorted(values, a)
    pb_ = np.searchsorted(values, b)
    fa = np.bincount(pa_, minlength=values.size) / max(a.size, 1)
    fb = np.bincount(pb_, minlength=values.size) / max(b.size, 1)
    return float(0.5 * np.abs(fa - fb).sum())


def _corr(sample: dict[str, np.ndarray]) -> np.ndarray:
    matrix = np.stack([sample[c] for c in CORRELATED], axis=1)
    matrix = matrix[np.isfinite(matrix).all(axis=1)]
    if matrix.shape[0] < 3:
        return np.zeros((len(CORRELATED), len(CORRELATED)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(matrix, rowvar=False)
    return np.nan_to_num(corr)


def fidelity(summary: BlockSummary, reference: BlockSummary, tests: list[dict[str, Any]]) -> dict[str, float]:
    """SDMetrics-style quality in [0, 1]: mean of KS complements (numeric), TV complements (categorical)
    and correlation similarity, each on the pooled samples."""
    from scipy import stats

    mine, theirs = global_sample(summary), global_sample(reference)
    parts: dict[str, float] = {}
    if mine and theirs:
        ks = [1.0 - t["ks_statistic"] for t in tests]
        for feature in ("log_amount", "hour", "lat", "lon"):
            a, b = mine[feature], theirs[feature]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if a.size and b.size:
                ks.append(1.0 - float(stats.ks_2samp(a, b).statistic))
        parts["numeric"] = float(np.mean(ks)) if ks else 1.0
        parts["categorical"] = float(np.mean([1.0 - _tv(mine[c], theirs[c]) for c in CATEGORICAL]))
        diff = np.abs(_corr(mine) - _corr(theirs))
        iu = np.triu_indices(len(CORRELATED), 1)
        parts["correlation"] = float(1.0 - diff[iu].mean() / 2.0)
        parts["score"] = float(np.mean([parts["numeric"], parts["categorical"], parts["correlation"]]))
    return parts
