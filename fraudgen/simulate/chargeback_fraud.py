"""Chargeback ("friendly") fraud: the holder makes normal-looking purchases with their own card and
device, then disputes them days or weeks later; each chargeback row copies its purchase (same card,
merchant and amount) and shares its fraud_case_id."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    DAY_US,
    ShardContext,
    case_starts,
    expand_cases,
    fill_merchant,
    own_device,
    to_cents,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import HIGH_VALUE_MCCS, MCC_LOG_MEAN, MCC_LOG_SD

MIN_CASE_SIZE = 2


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return 2 * (1 + (rng.random(n) < 0.25).astype(np.int64))


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    sizes = sizes - sizes % 2  # purchase + chargeback pairs
    n_cases = sizes.size
    pairs_per_case = sizes // 2
    case_of_pair, _ = expand_cases(pairs_per_case)
    p = case_of_pair.size
    users, merchants = ctx.users, ctx.merchants
    holder = np.floor(rng.random(n_cases) * users.count).astype(np.int64)
    pair_holder = holder[case_of_pair]
    purchase = Frame.empty(p)
    purchase.user[:] = users.first + pair_holder
    purchase.card[:] = purchase.user * 4 + np.floor(rng.random(p) * users.n_cards[pair_holder]).astype(
        np.int64
    )
    high_pool = np.flatnonzero(np.isin(merchants.mcc, HIGH_VALUE_MCCS))
    anywhere = np.floor(rng.random(p) * merchants.size).astype(np.int64)
    high = high_pool[np.floor(rng.random(p) * high_pool.size).astype(np.int64)]
    merchant = np.where(rng.random(p) < 0.6, high, anywhere)
    fill_merchant(purchase, np.arange(p), merchant, merchants)
    ecommerce = rng.random(p) < 0.8
    purchase.ttype[:] = TYPE["purchase"]
    purchase.channel[:] = np.where(ecommerce, CHANNEL["ecommerce"], CHANNEL["card_present"])
    device, ip = own_device(rng, ctx, pair_holder)
    purchase.device[:] = np.where(ecommerce, device, -1)
    purchase.ip[:] = np.where(ecommerce, ip, -1)
    purchase.country[:] = np.where(ecommerce, users.home_country[pair_holder], merchants.country[merchant])
    purchase.lat[:] = np.where(ecommerce, users.home_lat[pair_holder], merchants.lat[merchant])
    purchase.lon[:] = np.where(ecommerce, users.home_lon[pair_holder], merchants.lon[merchant])
    mcc = merchants.mcc[merchant]
    amount = np.exp(
        MCC_LOG_MEAN[mcc] + users.spend_offset[pair_holder] + 0.3 + MCC_LOG_SD[mcc] * rng.standard_normal(p)
    )
    purchase.cents[:] = to_cents(amount, minimum=500)
    purchase.status[:] = STATUS["approved"]
    # dispute 3-45 days later (compressed when the window is shorter)
    delay = (rng.uniform(3.0, 45.0, p) * DAY_US).astype(np.int64)
    delay = np.minimum(delay, max((ctx.end_us - ctx.start_us) // 2, 2))
    purchase.ts[:] = case_starts(rng, ctx, p, delay)
    chargeback = purchase.take(np.arange(p))
    chargeback.ttype[:] = TYPE["chargeback"]
    chargeback.ts[:] = np.minimum(purchase.ts + np.maximum(delay, 1), ctx.end_us - 1)
    purchase.ts[:] = np.minimum(purchase.ts, chargeback.ts - 1)
    both = Frame.concat([purchase, chargeback])
    both.case[:] = np.r_[cases[case_of_pair], cases[case_of_pair]]
    both.currency[:] = ctx.currency_of(users.home_country[np.r_[pair_holder, pair_holder]])
    # the engine labels rows by case: interleave so rows of a case are contiguous
    order = np.argsort(np.r_[case_of_pair, case_of_pair], kind="stable")
    return both.take(order)
