"""Card testing: a burst of tiny card-not-present attempts on one card, many declined, within minutes,
at one to three merchants, sometimes followed by a larger "cash-out" purchase once a test succeeds."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    MINUTE_US,
    ShardContext,
    case_frame,
    fill_merchant,
    place_cases,
    random_ips,
    to_cents,
    user_location,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import CNP_TEST_MCCS, FOREIGN_DEVICE_BASE, HIGH_VALUE_MCCS

MIN_CASE_SIZE = 3


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(MIN_CASE_SIZE + rng.poisson(7.0, n), 40)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, position = case_frame(sizes, cases)
    merchants = ctx.merchants
    victim = np.floor(rng.random(n_cases) * ctx.users.count).astype(np.int64)
    card_k = np.floor(rng.random(n_cases) * ctx.users.n_cards[victim]).astype(np.int64)
    cash_out = (rng.random(n_cases) < 0.4) & (sizes > MIN_CASE_SIZE)
    is_cash_out = cash_out[case_of_row] & (position == sizes[case_of_row] - 1)
    # the tester sits somewhere else half of the time
    abroad = rng.random(n_cases) < 0.5
    home = ctx.users.home_country[victim]
    tester_country = np.where(abroad, ctx.other_country(rng, home), home)
    country, lat, lon = user_location(rng, ctx, victim, tester_country)
    # test merchants: one to three small CNP shops per case
    test_pool = np.flatnonzero(np.isin(merchants.mcc, CNP_TEST_MCCS))
    high_pool = np.flatnonzero(np.isin(merchants.mcc, HIGH_VALUE_MCCS))
    shops = test_pool[np.floor(rng.random((n_cases, 3)) * test_pool.size).astype(np.int64)]
    n_shops = rng.integers(1, 4, n_cases)
    shop_pick = np.floor(rng.random(case_of_row.size) * n_shops[case_of_row]).astype(np.int64)
    merchant = shops[case_of_row, shop_pick]
    cash_merchant = high_pool[np.floor(rng.random(case_of_row.size) * high_pool.size).astype(np.int64)]
    fill_merchant(
        frame, np.arange(case_of_row.size), np.where(is_cash_out, cash_merchant, merchant), merchants
    )
    # timing: attempts seconds apart; the cash-out 20-90 minutes after the burst
    gaps = (2_000_000 + rng.exponential(25_000_000, case_of_row.size)).astype(np.int64)
    gaps = np.where(is_cash_out, (rng.uniform(20, 90, case_of_row.size) * MINUTE_US).astype(np.int64), gaps)
    frame.ts[:] = place_cases(rng, ctx, gaps, case_of_row, n_cases)
    frame.user[:] = ctx.users.first + victim[case_of_row]
    frame.card[:] = frame.user * 4 + card_k[case_of_row]
    frame.ttype[:] = TYPE["purchase"]
    frame.channel[:] = CHANNEL["ecommerce"]
    frame.device[:] = FOREIGN_DEVICE_BASE + cases[case_of_row] % 1_000_000_000
    frame.ip[:] = random_ips(rng, n_cases)[case_of_row]
    frame.country[:], frame.lat[:], frame.lon[:] = country[case_of_row], lat[case_of_row], lon[case_of_row]
    tiny = np.where(rng.random(case_of_row.size) < 0.25, 1.0, rng.uniform(0.5, 4.99, case_of_row.size))
    big = rng.lognormal(np.log(380.0), 0.6, case_of_row.size)
    frame.cents[:] = to_cents(np.where(is_cash_out, big, tiny))
    declined = rng.random(case_of_row.size) < np.where(is_cash_out, 0.2, 0.62)
    frame.status[:] = np.where(declined, STATUS["declined"], STATUS["approved"])
    frame.currency[:] = ctx.currency_of(ctx.users.home_country[victim[case_of_row]])
    return frame
