"""Sampled lines → integer-coded rows of the shard's synthetic world (a rule-engine ``Frame``).

The model decides what a row looks like; this module decides *who*: users, cards, merchants, devices,
payees, coordinates, the calendar date and case grouping, with the same world helpers and id bijection as
the rule engine, so LLM rows and rule rows share one population and one id space. Scenario structure the
contract relies on is imposed here (one card per card-testing case, a foreign device for takeovers and
card testing, the victim's own device and one new payee per phishing case, a fresh identity per
identity-theft case, one colluding shop per merchant-fraud case).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraudgen.llm.codec import (
    APPROVED,
    CHARGEBACK,
    DAY_US,
    HOUR_US,
    MINUTE_US,
    PURCHASE,
    LineFields,
    gap_bounds,
)
from fraudgen.schema import CARD_CHANNELS, CHANNELS, SCENARIOS, TRANSACTION_TYPES
from fraudgen.simulate.context import ShardContext, own_device, random_ips
from fraudgen.simulate.frame import Frame
from fraudgen.world import COUNTRY_LAT, COUNTRY_LON, FOREIGN_DEVICE_BASE, device_ip

CARD_CH = np.array([c in CARD_CHANNELS for c in CHANNELS])
DEVICE_CH = np.array([c in ("ecommerce", "mobile_app", "online_banking") for c in CHANNELS])
ONLINE_BANKING = CHANNELS.index("online_banking")
DEPOSIT = TRANSACTION_TYPES.index("deposit")
TRANSFER = TRANSACTION_TYPES.index("transfer")
MERCHANT_T = np.array([t in ("purchase", "refund", "chargeback") for t in TRANSACTION_TYPES])
LOCATED_CH = np.array([c in ("card_present", "atm") for c in CHANNELS])
S = {name: i + 1 for i, name in enumerate(SCENARIOS)}  # label index of each scenario
#: Synthetic identities of LLM identity-theft cases live far above any population (no legit history).
IDENTITY_BASE = 2_000_000_000
#: Local case numbers of LLM cases start here so they never collide with the rule engine's of a shard.
CASE_BASE = 5_000_000


@dataclass(frozen=True)
class Filled:
    frame: Frame
    overrides: int  # modelled values the scenario structure overrode (MCCs of a case's shared shops)
    line_of_row: np.ndarray  # the line each row came from (implied purchases share their chargeback's)


def place_times(
    lines: LineFields, case: np.ndarray, ctx: ShardContext, rng: np.random.Generator
) -> np.ndarray:
    """Timestamps: S rows on a window day with the sampled weekday; C rows a sampled gap after the last."""
    n = len(lines)
    start_us, end_us = ctx.start_us, ctx.end_us
    first_day, last_day = start_us // DAY_US, (end_us - 1) // DAY_US
    wd_first = (first_day + 3) % 7
    w = np.maximum(lines.weekday, 0)
    fd = first_day + (w - wd_first) % 7
    count = np.where(fd <= last_day, (last_day - fd) // 7 + 1, 0)
    k = np.floor(rng.random(n) * np.maximum(count, 1)).astype(np.int64)
    day = np.where(count > 0, fd + 7 * k, first_day + np.floor(rng.random(n) * (last_day - first_day + 1)))
    clock = np.maximum(lines.hour, 0) * HOUR_US + np.maximum(lines.minute, 0) * MINUTE_US
    ts = day.astype(np.int64) * DAY_US + clock + np.floor(rng.random(n) * MINUTE_US).astype(np.int64)
    outside = (ts < start_us) | (ts >= end_us)  # a partial first/last day: move a week inwards
    ts = np.where(outside & (ts < start_us), ts + 7 * DAY_US, np.where(outside, ts - 7 * DAY_US, ts))
    ts = np.clip(ts, start_us, end_us - 1)
    lo, hi = gap_bounds(np.maximum(lines.gap, 0))
    gap = np.where(lines.start, 0, lo + np.floor(rng.random(n) * (hi - lo)).astype(np.int64))
    # a case's rows: start time of its S row plus the running sum of gaps
    first = np.r_[0, np.flatnonzero(np.diff(case) != 0) + 1] if n else np.zeros(0, np.int64)
    case_start = np.repeat(ts[first], np.diff(np.r_[first, n]))
    csum = np.cumsum(gap)
    base = np.repeat(csum[first] - gap[first], np.diff(np.r_[first, n]))
    return np.minimum(case_start + (csum - base), end_us - 1)


def fill(lines: LineFields, ctx: ShardContext, rng: np.random.Generator, case_offset: int) -> Filled:
    """Rows for ``lines`` (grouped by label, S row first in each case) plus their implied purchases."""
    n = len(lines)
    fraud = lines.label > 0
    # a case is a run of lines of one fraud label; legit lines are their own units
    new_case = lines.start | ~fraud | np.r_[True, lines.label[1:] != lines.label[:-1]]
    unit = np.cumsum(new_case) - 1
    ts = place_times(lines, unit, ctx, rng)
    users = ctx.users
    frame = Frame.empty(n)
    frame.ts[:] = ts
    frame.cents[:] = lines.cents
    frame.currency[:] = lines.currency
    frame.ttype[:] = lines.ttype
    frame.channel[:] = lines.channel
    frame.status[:] = lines.status
    frame.country[:] = lines.country
    frame.is_fraud[:] = fraud
    frame.scenario[:] = lines.label - 1
    case_local = CASE_BASE + case_offset + unit
    frame.case[:] = np.where(fraud, _case_numbers(ctx, lines.label, case_local), -1)

    # --- who: users per unit (fraud cases share a victim/holder/mule), per row for merchant fraud --------
    n_units = int(unit.max()) + 1 if n else 0
    unit_user = users.sample(rng, n_units)
    local = unit_user[unit]
    home_match = _user_in_country(rng, ctx, lines.country)
    legit = ~fraud
    local = np.where(legit & (home_match >= 0), home_match, local)
    mf = lines.label == S["merchant_fraud"]
    local = np.where(mf, users.sample(rng, n), local)
    identity = lines.label == S["identity_theft"]
    global_user = users.first + local
    global_user = np.where(identity, IDENTITY_BASE + case_offset + unit, global_user)
    frame.user[:] = global_user
    n_cards = np.where(identity, 1, users.n_cards[local])
    card_k = np.floor(rng.random(n_units) * 2).astype(np.int64)[unit] % n_cards
    card_k = np.where(legit | mf, np.floor(rng.random(n) * n_cards).astype(np.int64), card_k)
    frame.card[:] = np.where(CARD_CH[lines.channel], global_user * 4 + card_k, -1)

    # --- merchants: by (country, MCC); one colluding shop per merchant-fraud case ----------------------
    has_merchant = MERCHANT_T[lines.ttype] & (lines.mcc >= 0)
    merchant = _merchant_for(rng, ctx, lines.country, lines.mcc)
    ct = lines.label == S["card_testing"]
    merchant = _case_shops(merchant, unit, np.where(mf, 0, lines.mcc), np.flatnonzero(mf & has_merchant), 1)
    merchant = _case_shops(merchant, unit, lines.mcc, np.flatnonzero(ct & has_merchant), 4)
    merchant = np.where(has_merchant, merchant, -1)
    frame.merchant[:] = merchant
    frame.mcc[:] = np.where(has_merchant, ctx.merchants.mcc[np.maximum(merchant, 0)], -1)
    overrides = int(np.count_nonzero(has_merchant & (frame.mcc != lines.mcc)))

    # --- payees, devices, coordinates ---------------------------------------------------------------
    transfer = lines.ttype == TRANSFER
    new_payee = 5_000_000_000 + np.floor(rng.random(n) * 4_000_000_000).astype(np.int64)
    habitual = users.payees[local, np.floor(rng.random(n) * 3).astype(np.int64)]
    unit_payee = new_payee[np.r_[np.flatnonzero(new_case), n][:-1]] if n else new_payee
    payee = np.where(legit & (rng.random(n) < 0.85), habitual, new_payee)
    payee = np.where(lines.label == S["phishing"], unit_payee[unit], payee)
    frame.counterparty[:] = np.where(transfer, payee, -1)

    needs_device = DEVICE_CH[lines.channel] & ~((lines.channel == ONLINE_BANKING) & (lines.ttype == DEPOSIT))
    device, ip = own_device(rng, ctx, local)
    own_id = global_user * 4
    device = np.where(identity, own_id, device)
    ip = np.where(identity, device_ip(own_id, ctx.seed), ip)
    foreign_ip = random_ips(rng, n_units)[unit]
    ato = lines.label == S["account_takeover"]
    case_mod = case_local % 1_000_000_000
    device = np.where(ct, FOREIGN_DEVICE_BASE + case_mod, device)
    device = np.where(ato, FOREIGN_DEVICE_BASE + 1_000_000_000 + case_mod, device)
    ip = np.where(ct | ato, foreign_ip, ip)
    frame.device[:] = np.where(needs_device, device, -1)
    frame.ip[:] = np.where(needs_device, ip, -1)

    at_home = ~identity & (users.home_country[local] == lines.country)
    lat = np.where(at_home, users.home_lat[local], COUNTRY_LAT[lines.country] + rng.normal(0, 1.2, n))
    lon = np.where(at_home, users.home_lon[local], COUNTRY_LON[lines.country] + rng.normal(0, 1.6, n))
    lat, lon = lat + rng.normal(0, 0.05, n), lon + rng.normal(0, 0.05, n)
    located = LOCATED_CH[lines.channel] & (merchant >= 0)
    m = np.maximum(merchant, 0)
    frame.lat[:] = np.where(located, ctx.merchants.lat[m] + rng.normal(0, 0.02, n), lat)
    frame.lon[:] = np.where(located, ctx.merchants.lon[m] + rng.normal(0, 0.02, n), lon)
    frame.lat[:] = np.clip(frame.lat, -90.0, 90.0)
    frame.lon[:] = np.clip(frame.lon, -180.0, 180.0)
    rows = np.flatnonzero((lines.ttype == CHARGEBACK) & (lines.delay >= 0))
    return Filled(_with_implied_purchases(frame, lines, rows, ctx, rng), overrides, np.r_[np.arange(n), rows])


def _case_shops(
    merchant: np.ndarray, unit: np.ndarray, group: np.ndarray, rows: np.ndarray, limit: int
) -> np.ndarray:
    """Rows of one case and group share the merchant of the group's first row; a case keeps at most
    ``limit`` distinct merchants (later groups reuse the case's first merchant)."""
    if rows.size == 0:
        return merchant
    key = unit[rows].astype(np.int64) * 64 + group[rows]
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    chosen = merchant[rows][first]
    g_unit = uniq // 64
    order = np.lexsort((first, g_unit))
    run_start = np.r_[0, np.flatnonzero(np.diff(g_unit[order]) != 0) + 1]
    run_of = np.repeat(run_start, np.diff(np.r_[run_start, order.size]))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size) - run_of
    head = np.empty(order.size, np.int64)
    head[order] = order[run_of]
    chosen = np.where(rank < limit, chosen, chosen[head])
    out = merchant.copy()
    out[rows] = chosen[inverse]
    return out


def _case_numbers(ctx: ShardContext, label: np.ndarray, local_case: np.ndarray) -> np.ndarray:
    return ctx.case_number(np.maximum(label - 1, 0), local_case)


def _user_in_country(rng: np.random.Generator, ctx: ShardContext, country: np.ndarray) -> np.ndarray:
    """A local user living in ``country`` for each row (-1 where the shard has none)."""
    home = ctx.users.home_country
    order = np.argsort(home, kind="stable")
    sorted_home = home[order]
    lo = np.searchsorted(sorted_home, country, side="left")
    hi = np.searchsorted(sorted_home, country, side="right")
    pick = lo + np.floor(rng.random(country.size) * np.maximum(hi - lo, 1)).astype(np.int64)
    return np.where(hi > lo, order[np.minimum(pick, home.size - 1)], -1)


def _merchant_for(
    rng: np.random.Generator, ctx: ShardContext, country: np.ndarray, mcc: np.ndarray
) -> np.ndarray:
    """A merchant of the given MCC in the given country, else of that MCC anywhere, else any merchant."""
    merchants = ctx.merchants
    key = merchants.country.astype(np.int64) * 64 + merchants.mcc
    order = np.argsort(key, kind="stable")
    sk = key[order]
    want = country.astype(np.int64) * 64 + np.maximum(mcc, 0)
    lo, hi = np.searchsorted(sk, want, "left"), np.searchsorted(sk, want, "right")
    r = rng.random(country.size)
    exact = order[np.minimum(lo + np.floor(r * np.maximum(hi - lo, 1)).astype(np.int64), sk.size - 1)]
    by_mcc = np.argsort(merchants.mcc, kind="stable")
    sm = merchants.mcc[by_mcc]
    lo2, hi2 = np.searchsorted(sm, mcc, "left"), np.searchsorted(sm, mcc, "right")
    anywhere = by_mcc[np.minimum(lo2 + np.floor(r * np.maximum(hi2 - lo2, 1)).astype(np.int64), sm.size - 1)]
    fallback = np.floor(r * merchants.size).astype(np.int64)
    return np.where(hi > lo, exact, np.where(hi2 > lo2, anywhere, fallback))


def _with_implied_purchases(
    frame: Frame, lines: LineFields, rows: np.ndarray, ctx: ShardContext, rng: np.random.Generator
) -> Frame:
    """Each chargeback line with a delay also yields the purchase it disputes, ``delay`` days earlier."""
    if rows.size == 0:
        return frame
    purchase = frame.take(rows)
    cb_ts = frame.ts[rows]
    back = lines.delay[rows] * DAY_US + np.floor(rng.random(rows.size) * DAY_US).astype(np.int64)
    p_ts = cb_ts - np.maximum(back, 1)
    early = p_ts < ctx.start_us
    p_ts = np.where(
        early, ctx.start_us + ((cb_ts - ctx.start_us) * rng.random(rows.size)).astype(np.int64), p_ts
    )
    bump = p_ts >= cb_ts  # a chargeback at the very window start: move it one microsecond later
    frame.ts[rows] = np.where(bump, np.minimum(cb_ts + 1, ctx.end_us - 1), cb_ts)
    purchase.ts[:] = np.minimum(p_ts, frame.ts[rows] - 1)
    purchase.ttype[:] = PURCHASE
    purchase.status[:] = APPROVED
    return Frame.concat([frame, purchase])
