"""Phishing / authorised push payment: the victim, on their own usual device and IP, is talked into one
or a few large transfers to a payee they never paid before, within minutes."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import MINUTE_US, ShardContext, case_frame, own_device, place_cases, to_cents
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame

MIN_CASE_SIZE = 1


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return 1 + rng.binomial(2, 0.3, n)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, _ = case_frame(sizes, cases)
    m = case_of_row.size
    users = ctx.users
    victim = np.floor(rng.random(n_cases) * users.count).astype(np.int64)
    row_victim = victim[case_of_row]
    frame.user[:] = users.first + row_victim
    frame.ttype[:] = TYPE["transfer"]
    frame.channel[:] = np.where(rng.random(n_cases) < 0.7, CHANNEL["mobile_app"], CHANNEL["online_banking"])[
        case_of_row
    ]
    device, ip = own_device(rng, ctx, victim)  # the victim's own, known device
    frame.device[:], frame.ip[:] = device[case_of_row], ip[case_of_row]
    new_payee = 5_000_000_000 + np.floor(rng.random(n_cases) * 4_000_000_000).astype(np.int64)
    frame.counterparty[:] = new_payee[case_of_row]
    amount = rng.lognormal(np.log(2_800.0) + 0.5 * users.spend_offset[row_victim], 0.65)
    amount = np.where(rng.random(m) < 0.4, np.round(amount, -2), amount)
    frame.cents[:] = to_cents(np.maximum(amount, 200.0))
    frame.status[:] = np.where(rng.random(m) < 0.08, STATUS["declined"], STATUS["approved"])
    frame.country[:] = users.home_country[row_victim]
    frame.lat[:] = users.home_lat[row_victim] + rng.normal(0, 0.05, m)
    frame.lon[:] = users.home_lon[row_victim] + rng.normal(0, 0.05, m)
    gaps = (2 * MINUTE_US + rng.exponential(8.0, m) * MINUTE_US).astype(np.int64)
    frame.ts[:] = place_cases(rng, ctx, gaps, case_of_row, n_cases)
    frame.currency[:] = ctx.currency_of(frame.country)
    return frame
