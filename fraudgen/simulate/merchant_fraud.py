"""Merchant fraud: a colluding merchant runs many different cards through its terminal with round or
split amounts, and its books show refund and chargeback anomalies (refunds to cards that never bought,
disputes of its own sales)."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    DAY_US,
    HOUR_US,
    ShardContext,
    case_frame,
    fill_merchant,
    own_device,
    place_cases,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame

MIN_CASE_SIZE = 4
ROUND_AMOUNTS = np.array([50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0])


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(MIN_CASE_SIZE + rng.poisson(12.0, n), 60)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, position = case_frame(sizes, cases)
    m = case_of_row.size
    merchants = ctx.merchants
    shop = np.floor(rng.random(n_cases) * merchants.size).astype(np.int64)
    fill_merchant(frame, np.arange(m), shop[case_of_row], merchants)
    # a different cardholder (and card) on almost every row
    holder = np.floor(rng.random(m) * ctx.users.count).astype(np.int64)
    frame.user[:] = ctx.users.first + holder
    frame.card[:] = frame.user * 4 + np.floor(rng.random(m) * ctx.users.n_cards[holder]).astype(np.int64)
    ecommerce = rng.random(n_cases)[case_of_row] < 0.3
    frame.channel[:] = np.where(ecommerce, CHANNEL["ecommerce"], CHANNEL["card_present"])
    device, ip = own_device(rng, ctx, holder)
    frame.device[:] = np.where(ecommerce, device, -1)
    frame.ip[:] = np.where(ecommerce, ip, -1)
    frame.country[:] = merchants.country[frame.merchant]
    frame.lat[:] = merchants.lat[frame.merchant] + rng.normal(0, 0.01, m)
    frame.lon[:] = merchants.lon[frame.merchant] + rng.normal(0, 0.01, m)
    style = rng.random(m)
    round_amount = ROUND_AMOUNTS[rng.integers(0, ROUND_AMOUNTS.size, m)]
    split_total = rng.uniform(1_000.0, 6_000.0, n_cases)[case_of_row]
    split_amount = np.floor(split_total / rng.integers(2, 6, m) * 100.0) / 100.0  # one sale split in parts
    normal = rng.lognormal(np.log(90.0), 0.8, m)
    amount = np.where(style < 0.5, round_amount, np.where(style < 0.85, split_amount, normal))
    frame.cents[:] = np.maximum(np.round(amount * 100.0), 100).astype(np.int64)
    frame.ttype[:] = TYPE["purchase"]
    frame.status[:] = np.where(rng.random(m) < 0.08, STATUS["declined"], STATUS["approved"])
    gaps = (rng.exponential(6.0, m) * HOUR_US).astype(np.int64)
    frame.ts[:] = place_cases(rng, ctx, gaps, case_of_row, n_cases)
    # anomalies: refunds to cards that never bought here; chargebacks of the shop's own earlier sales
    kind = rng.random(m)
    late = position >= 2
    refund = late & (kind < 0.12)
    frame.ttype[refund] = TYPE["refund"]
    frame.status[refund] = STATUS["approved"]
    is_disputed = late & (kind > 0.9)
    disputed = np.flatnonzero(is_disputed)
    source = disputed - 1 - np.floor(rng.random(disputed.size) * (position[disputed] - 1)).astype(np.int64)
    keep = (frame.ttype[source] == TYPE["purchase"]) & ~is_disputed[source]
    disputed, source = disputed[keep], source[keep]
    # a sale is disputed at most once (two identical chargebacks would be duplicate rows)
    _, first = np.unique(source, return_index=True)
    disputed, source = disputed[first], source[first]
    for column in (
        "user",
        "card",
        "merchant",
        "mcc",
        "cents",
        "channel",
        "device",
        "ip",
        "country",
        "lat",
        "lon",
    ):
        getattr(frame, column)[disputed] = getattr(frame, column)[source]
    frame.ttype[disputed] = TYPE["chargeback"]
    frame.status[disputed] = STATUS["approved"]
    frame.status[source] = STATUS["approved"]
    frame.ts[disputed] = np.minimum(np.maximum(frame.ts[disputed], frame.ts[source] + DAY_US), ctx.end_us - 1)
    frame.ts[source] = np.minimum(frame.ts[source], frame.ts[disputed] - 1)
    frame.currency[:] = ctx.currency_of(frame.country)
    return frame
