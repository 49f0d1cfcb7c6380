"""The generator's expected profile: a same-shaped reference batch generated on the fly.

When no reference batch is given, a batch is compared with what the rule engine produces for a request of
the same shape (window, fraud rate, scenario mix, countries, population density), generated with another
seed and capped in size, plus a fraud-rich batch so every scenario has enough rows to test.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from fraudgen.request import DEFAULT_SCENARIO_MIX, GenerationRequest
from fraudgen.schema import SCENARIOS
from fraudgen.validate.hashing import sorted_unique
from fraudgen.validate.summary import BlockSummary
from fraudgen.world import COUNTRIES, COUNTRY_CODES

DAY_US = 86_400_000_000
FRAUD_RICH_ROWS = 40_000


def _window(summary: BlockSummary) -> tuple[datetime, datetime]:
    if summary.window is not None:
        lo, hi = summary.window
    elif summary.ts_min is not None and summary.ts_max is not None:
        lo = summary.ts_min // DAY_US * DAY_US
        hi = max((summary.ts_max // DAY_US + 1) * DAY_US, lo + DAY_US)
    else:
        lo, hi = 1_767_225_600_000_000, 1_769_904_000_000_000  # January 2026
    return datetime.fromtimestamp(lo / 1e6, UTC), datetime.fromtimestamp(hi / 1e6, UTC)


def distinct_users(summary: BlockSummary) -> float:
    """K-minimum-values estimate of the distinct users of the batch (from the bottom-k user sample)."""
    users = sorted_unique(summary.user_rows.get("user", np.zeros(0, np.uint64)))
    if users.size < summary.user_sample_size:
        return float(users.size)
    kth = float(users[-1]) / 2.0**64
    return (users.size - 1) / kth if kth > 0 else float(users.size)


def expected_requests(
    summary: BlockSummary, reference_rows: int, seed: int
) -> tuple[GenerationRequest, GenerationRequest]:
    """(same-shaped request, fraud-rich request) mirroring the batch's observed shape."""
    start, end = _window(summary)
    rows = int(min(max(summary.rows, 20_000), reference_rows))
    fraud_rows = {s: summary.scenario_rows.get(s, 0) for s in SCENARIOS}
    total = sum(summary.scenario_rows.values()) or 1
    fraud_rate = float(min(max(sum(fraud_rows.values()) / total, 0.0), 1.0))
    mix = {s: float(n) for s, n in fraud_rows.items() if n > 0} or dict(DEFAULT_SCENARIO_MIX)
    observed = [c for c in summary.counts.get("country", {}) if c in COUNTRY_CODES]
    countries = sorted(observed) if observed and len(observed) < len(COUNTRY_CODES) else None
    currencies = [c for c, n in summary.counts.get("currency", {}).items() if n > 0 and c != "<null>"]
    natural = {COUNTRIES[COUNTRY_CODES.index(c)][1] for c in (countries or COUNTRY_CODES)}
    currency = currencies[0] if len(currencies) == 1 and len(natural) > 1 else None
    est = distinct_users(summary)
    users = max(50, round(est * rows / max(summary.rows, 1))) if est > 0 else None
    common = {"start": start, "end": end, "countries": countries, "currency": currency, "scenario_mix": mix}
    same = GenerationRequest(
        rows=rows, seed=seed, batch_id="validation-reference", fraud_rate=fraud_rate, users=users, **common
    )
    rich = GenerationRequest(
        rows=FRAUD_RICH_ROWS, seed=seed + 1, batch_id="validation-reference-fraud", fraud_rate=0.5, **common
    )
    return same, rich


def expected_profile(summary: BlockSummary, reference_rows: int, seed: int) -> BlockSummary:
    """Summary of the generator's own output for the batch's shape (scenario samples from the rich batch)."""
    from fraudgen.simulate.engine import generate_table
    from fraudgen.validate.stage import summarise_block

    same, rich = expected_requests(summary, reference_rows, seed)
    window = summary.window
    window_dt = None if window is None else _window(summary)
    base = summarise_block(generate_table(same), window_dt, sample_size=summary.sample_size, seed=seed)
    if summary.rows - summary.scenario_rows.get("legit", 0) > 0:
        fraud = summarise_block(generate_table(rich), window_dt, sample_size=summary.sample_size, seed=seed)
        for name in SCENARIOS:
            if name in fraud.samples:
                base.samples[name] = fraud.samples[name]
    return base
