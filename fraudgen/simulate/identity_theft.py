"""Identity theft: a recently opened account behind a synthetic identity ramps up spending fast (bigger
amounts, cash, then transfers out: a "bust-out") over a few days or weeks and then disappears."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    HOUR_US,
    ShardContext,
    case_frame,
    own_ip_of,
    place_cases,
    to_cents,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import COUNTRY_LAT, COUNTRY_LON, HIGH_VALUE_MCCS

MIN_CASE_SIZE = 3


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(MIN_CASE_SIZE + rng.poisson(6.0, n), 25)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, position = case_frame(sizes, cases)
    m = case_of_row.size
    merchants = ctx.merchants
    identity = ctx.identity_user_start + np.arange(n_cases, dtype=np.int64)
    options = np.asarray(ctx.countries, dtype=np.int16)
    country = options[np.floor(rng.random(n_cases) * options.size).astype(np.int64)]
    lat = COUNTRY_LAT[country] + rng.normal(0, 1.5, n_cases)
    lon = COUNTRY_LON[country] + rng.normal(0, 2.0, n_cases)
    frame.user[:] = identity[case_of_row]
    progress = position / np.maximum(sizes[case_of_row] - 1, 1)  # 0 at opening, 1 at the bust-out
    # early: purchases; middle: high-value purchases and cash; last rows: transfers out
    r = rng.random(m)
    transfer = (progress > 0.75) & (r < 0.6)
    cash = ~transfer & (progress > 0.3) & (r < 0.35)
    purchase = ~transfer & ~cash
    ecommerce = purchase & (rng.random(m) < 0.6)
    frame.ttype[:] = np.where(
        transfer, TYPE["transfer"], np.where(cash, TYPE["cash_withdrawal"], TYPE["purchase"])
    )
    frame.channel[:] = np.where(
        transfer,
        CHANNEL["online_banking"],
        np.where(cash, CHANNEL["atm"], np.where(ecommerce, CHANNEL["ecommerce"], CHANNEL["card_present"])),
    )
    rows = np.flatnonzero(purchase)
    high_pool = np.flatnonzero(np.isin(merchants.mcc, HIGH_VALUE_MCCS))
    local = merchants.sample_in_country(rng, country[case_of_row[rows]])
    high = high_pool[np.floor(rng.random(rows.size) * high_pool.size).astype(np.int64)]
    merchant = np.where(rng.random(rows.size) < 0.3 + 0.6 * progress[rows], high, local)
    frame.merchant[rows] = merchant
    frame.mcc[rows] = merchants.mcc[merchant]
    frame.card[:] = np.where(transfer, -1, frame.user * 4)
    device = frame.user * 4
    online = transfer | ecommerce
    frame.device[:] = np.where(online, device, -1)
    frame.ip[:] = np.where(online, own_ip_of(ctx, device), -1)
    frame.counterparty[:] = np.where(
        transfer, 5_000_000_000 + np.floor(rng.random(m) * 4_000_000_000).astype(np.int64), -1
    )
    growth = rng.uniform(1.25, 1.7, n_cases)[case_of_row]
    base = rng.lognormal(np.log(45.0), 0.5, n_cases)[case_of_row]
    amount = np.minimum(base * growth**position, 9_000.0) * rng.lognormal(0.0, 0.25, m)
    amount = np.where(cash, np.maximum(np.round(amount / 20.0), 1.0) * 20.0, amount)
    frame.cents[:] = to_cents(amount, minimum=100)
    frame.status[:] = np.where(
        rng.random(m) < 0.05 + 0.3 * progress**3, STATUS["declined"], STATUS["approved"]
    )
    frame.country[:], frame.lat[:], frame.lon[:] = country[case_of_row], lat[case_of_row], lon[case_of_row]
    gaps = (rng.exponential(30.0, m) * HOUR_US).astype(np.int64)
    frame.ts[:] = place_cases(rng, ctx, gaps, case_of_row, n_cases)
    frame.currency[:] = ctx.currency_of(country[case_of_row])
    return frame
