"""Legitimate behaviour: per-user habits, daily/weekly rhythm, heavy-tailed amounts, travel and declines.

Legit data deliberately overlaps every fraud signature somewhere (small online purchases, new payees,
trips abroad, large transfers, round amounts, genuine chargebacks with their purchase), so that fraud is
learnable from combinations and history, never from a single column value.
"""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    DAY_US,
    ShardContext,
    diurnal_times,
    fill_merchant,
    own_device,
    time_order,
    to_cents,
    user_location,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import MCC_ECOM_SHARE, MCC_LOG_MEAN, MCC_LOG_SD, categorical

#: Mix of legit transaction kinds (purchase, refund, chargeback, transfer, cash_withdrawal, deposit).
KIND_SHARE = np.array([0.800, 0.014, 0.004, 0.072, 0.045, 0.065])
KINDS = ("purchase", "refund", "chargeback", "transfer", "cash_withdrawal", "deposit")


def generate_legit(ctx: ShardContext, n: int, rng: np.random.Generator) -> Frame:
    """``n`` legitimate transactions of the shard's users."""
    frame = Frame.empty(n)
    if n == 0:
        return frame
    users = ctx.users
    local = users.sample(rng, n)
    lo = np.maximum(users.active_from, ctx.start_us)
    ts = diurnal_times(
        rng, lo, np.full(users.count, ctx.end_us, dtype=np.int64), users.hour_shift, group=local
    )
    # rows are put in time order now, while they are two columns: the engine's final sort of the shard
    # then finds legit rows nearly in place, and its gathers stay sequential (cache-friendly)
    order = time_order(ts)
    local = local[order]
    frame.ts[:] = ts[order]
    frame.user[:] = users.first + local
    kind = categorical(rng, KIND_SHARE, n)
    # travel: the user is abroad for this transaction
    travelling = rng.random(n) < users.travel_rate[local]
    country = np.where(
        travelling, ctx.other_country(rng, users.home_country[local]), users.home_country[local]
    )
    frame.country[:], frame.lat[:], frame.lon[:] = user_location(rng, ctx, local, country)
    k_card = np.floor(rng.random(n) * users.n_cards[local]).astype(np.int64)
    card = frame.user * 4 + k_card

    purchase = np.flatnonzero(kind == 0)
    _purchases(ctx, rng, frame, purchase, local[purchase], travelling[purchase], card[purchase])
    _transfers(ctx, rng, frame, np.flatnonzero(kind == 3), local)
    _cash(ctx, rng, frame, np.flatnonzero(kind == 4), card)
    _deposits(ctx, rng, frame, np.flatnonzero(kind == 5), local, card)
    _after_purchase(rng, ctx, frame, np.flatnonzero(kind == 1), purchase, "refund")
    _after_purchase(rng, ctx, frame, np.flatnonzero(kind == 2), purchase, "chargeback")
    frame.currency[:] = ctx.currency_of(frame.country)
    return frame


def _purchases(
    ctx: ShardContext,
    rng: np.random.Generator,
    frame: Frame,
    rows: np.ndarray,
    local: np.ndarray,
    travelling: np.ndarray,
    card: np.ndarray,
) -> None:
    m = rows.size
    if m == 0:
        return
    users, merchants = ctx.users, ctx.merchants
    favourite = users.favourite_merchants[local, np.floor(rng.random(m) * 6).astype(np.int64)]
    nearby = merchants.sample_in_country(rng, frame.country[rows])
    anywhere = np.floor(rng.random(m) * merchants.size).astype(np.int64)
    r = rng.random(m)
    merchant = np.where(
        travelling, nearby, np.where(r < 0.55, favourite, np.where(r < 0.92, nearby, anywhere))
    )
    ecommerce = rng.random(m) < MCC_ECOM_SHARE[merchants.mcc[merchant]]
    # a shop abroad is only visited in person while travelling: otherwise shop where the user is
    merchant = np.where(~ecommerce & (merchants.country[merchant] != frame.country[rows]), nearby, merchant)
    fill_merchant(frame, rows, merchant, merchants)
    mcc = merchants.mcc[merchant]
    frame.ttype[rows] = TYPE["purchase"]
    frame.channel[rows] = np.where(ecommerce, CHANNEL["ecommerce"], CHANNEL["card_present"])
    frame.card[rows] = card
    # card-present: where the shop is; ecommerce: where the user (and device) is
    frame.lat[rows] = np.where(ecommerce, frame.lat[rows], merchants.lat[merchant] + rng.normal(0, 0.02, m))
    frame.lon[rows] = np.where(ecommerce, frame.lon[rows], merchants.lon[merchant] + rng.normal(0, 0.02, m))
    frame.country[rows] = np.where(ecommerce, frame.country[rows], merchants.country[merchant])
    device, ip = own_device(rng, ctx, local)
    frame.device[rows] = np.where(ecommerce, device, -1)
    frame.ip[rows] = np.where(ecommerce, ip, -1)
    log_amount = MCC_LOG_MEAN[mcc] + users.spend_offset[local] + merchants.price_offset[merchant]
    amount = np.exp(log_amount + MCC_LOG_SD[mcc] * rng.standard_normal(m))
    big_ticket = rng.random(m) < 0.01
    amount = np.where(big_ticket, amount * rng.lognormal(1.2, 0.7, m), amount)
    round_amount = rng.random(m) < 0.05
    amount = np.where(round_amount, np.maximum(np.round(amount, -1), 5.0), amount)
    frame.cents[rows] = to_cents(amount, minimum=25)
    typical = np.exp(MCC_LOG_MEAN[mcc] + users.spend_offset[local])
    p_decline = 0.015 + 0.05 * (amount > 4 * typical) + 0.03 * (ecommerce & travelling)
    frame.status[rows] = np.where(rng.random(m) < p_decline, STATUS["declined"], STATUS["approved"])


def _transfers(
    ctx: ShardContext, rng: np.random.Generator, frame: Frame, rows: np.ndarray, local: np.ndarray
) -> None:
    m = rows.size
    if m == 0:
        return
    lu = local[rows]
    frame.ttype[rows] = TYPE["transfer"]
    frame.channel[rows] = np.where(rng.random(m) < 0.55, CHANNEL["mobile_app"], CHANNEL["online_banking"])
    habitual = ctx.users.payees[lu, np.floor(rng.random(m) * 3).astype(np.int64)]
    new_payee = 5_000_000_000 + np.floor(rng.random(m) * 4_000_000_000).astype(np.int64)
    frame.counterparty[rows] = np.where(rng.random(m) < 0.85, habitual, new_payee)
    frame.device[rows], frame.ip[rows] = own_device(rng, ctx, lu)
    amount = rng.lognormal(np.log(220.0) + ctx.users.spend_offset[lu], 1.05)
    large = rng.random(m) < 0.05  # rent, car, savings, suppliers: overlaps takeover, phishing, layering
    amount = np.where(large, rng.lognormal(np.log(4_000.0), 0.75, m), amount)
    amount = np.where(rng.random(m) < 0.35, np.maximum(np.round(amount, -1), 10.0), amount)
    frame.cents[rows] = to_cents(amount, minimum=100)
    frame.status[rows] = np.where(rng.random(m) < 0.02, STATUS["declined"], STATUS["approved"])


def _cash(
    ctx: ShardContext, rng: np.random.Generator, frame: Frame, rows: np.ndarray, card: np.ndarray
) -> None:
    m = rows.size
    if m == 0:
        return
    frame.ttype[rows] = TYPE["cash_withdrawal"]
    frame.channel[rows] = CHANNEL["atm"]
    frame.card[rows] = card[rows]
    frame.cents[rows] = (20 * rng.integers(1, 26, m)) * 100
    frame.status[rows] = np.where(rng.random(m) < 0.03, STATUS["declined"], STATUS["approved"])


def _deposits(
    ctx: ShardContext,
    rng: np.random.Generator,
    frame: Frame,
    rows: np.ndarray,
    local: np.ndarray,
    card: np.ndarray,
) -> None:
    """Salary credits (the same amount every time for a user) and cash deposits at ATMs."""
    m = rows.size
    if m == 0:
        return
    lu = local[rows]
    frame.ttype[rows] = TYPE["deposit"]
    salary = rng.random(m) < 0.6
    frame.channel[rows] = np.where(salary, CHANNEL["online_banking"], CHANNEL["atm"])
    frame.card[rows] = np.where(salary, -1, card[rows])
    cash = np.round(rng.lognormal(np.log(300.0), 0.9, m), -1)
    # cash-intensive small businesses bank their takings, often just under the reporting threshold to
    # spare the paperwork: the structuring look-alikes that make AML alerts hard (amounts with cents)
    business = rng.random(m) < 0.15
    takings = np.where(
        rng.random(m) < 0.4, rng.uniform(8_000.0, 9_999.0, m), rng.uniform(2_000.0, 9_999.0, m)
    )
    cash = np.where(business, takings, cash)
    frame.cents[rows] = np.where(salary, ctx.users.salary_cents[lu], to_cents(cash, minimum=1_000))
    frame.status[rows] = STATUS["approved"]


def _after_purchase(
    rng: np.random.Generator,
    ctx: ShardContext,
    frame: Frame,
    rows: np.ndarray,
    purchases: np.ndarray,
    kind: str,
) -> None:
    """Refunds and genuine chargebacks copy an earlier purchase of the same user, card and merchant."""
    m = rows.size
    if m == 0:
        return
    if purchases.size == 0:  # nothing to refer to: make them ordinary purchases instead
        frame.ttype[rows] = TYPE["purchase"]
        _purchases(
            ctx, rng, frame, rows, frame.user[rows] - ctx.users.first, np.zeros(m, bool), frame.user[rows] * 4
        )
        return
    source = purchases[np.floor(rng.random(m) * purchases.size).astype(np.int64)]
    for column in ("user", "card", "merchant", "mcc", "channel", "country", "lat", "lon", "device", "ip"):
        getattr(frame, column)[rows] = getattr(frame, column)[source]
    frame.ts[source] = np.minimum(frame.ts[source], ctx.end_us - 2)
    frame.status[source] = STATUS["approved"]
    room = ctx.end_us - 1 - frame.ts[source]
    delay = np.minimum(room, 1 + (rng.random(m) * np.minimum(room, 40 * DAY_US)).astype(np.int64))
    frame.ts[rows] = frame.ts[source] + np.maximum(delay, 1)
    full = rng.random(m) < (0.6 if kind == "refund" else 1.0)
    partial = np.maximum(1, (frame.cents[source] * rng.uniform(0.2, 0.9, m)).astype(np.int64))
    frame.cents[rows] = np.where(full, frame.cents[source], partial)
    frame.ttype[rows] = TYPE[kind]
    frame.status[rows] = STATUS["approved"]
