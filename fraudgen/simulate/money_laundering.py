"""Money laundering by structuring/smurfing: a mule account takes repeated cash deposits just under the
reporting threshold, smurfs fan money in with transfers to it, and the mule fans it out to new payees,
every amount kept below the threshold."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import HOUR_US, ShardContext, case_frame, own_device, place_cases, to_cents
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import REPORTING_THRESHOLD

MIN_CASE_SIZE = 3


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(MIN_CASE_SIZE + rng.poisson(8.0, n), 30)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, position = case_frame(sizes, cases)
    m = case_of_row.size
    users = ctx.users
    mule = np.floor(rng.random(n_cases) * users.count).astype(np.int64)
    progress = position / np.maximum(sizes[case_of_row] - 1, 1)
    r = rng.random(m)
    # placement first (deposits and smurf transfers in), layering last (transfers out)
    out = (progress > 0.6) & (r < 0.7)
    smurf_in = ~out & (r < 0.3)
    deposit = ~out & ~smurf_in
    smurf = np.floor(rng.random(m) * users.count).astype(np.int64)
    actor = np.where(smurf_in, smurf, mule[case_of_row])
    frame.user[:] = users.first + actor
    frame.ttype[:] = np.where(deposit, TYPE["deposit"], TYPE["transfer"])
    frame.channel[:] = np.where(
        deposit,
        CHANNEL["atm"],
        np.where(rng.random(m) < 0.5, CHANNEL["mobile_app"], CHANNEL["online_banking"]),
    )
    frame.card[:] = np.where(deposit, frame.user * 4, -1)
    device, ip = own_device(rng, ctx, actor)
    frame.device[:] = np.where(deposit, -1, device)
    frame.ip[:] = np.where(deposit, -1, ip)
    mule_account = users.first + mule[case_of_row]
    payees = 5_000_000_000 + np.floor(rng.random((n_cases, 4)) * 4_000_000_000).astype(np.int64)
    fan_out = payees[case_of_row, np.floor(rng.random(m) * 4).astype(np.int64)]
    frame.counterparty[:] = np.where(smurf_in, mule_account, np.where(out, fan_out, -1))
    # just under the threshold, uneven so it does not look round
    under = REPORTING_THRESHOLD * rng.uniform(0.86, 0.999, m)
    smaller = rng.uniform(2_500.0, REPORTING_THRESHOLD * 0.95, m)
    amount = np.where(deposit | (rng.random(m) < 0.5), under, smaller)
    frame.cents[:] = np.minimum(to_cents(amount), int(REPORTING_THRESHOLD * 100) - 1)
    frame.status[:] = np.where(rng.random(m) < 0.03, STATUS["declined"], STATUS["approved"])
    home = users.home_country[actor]
    frame.country[:] = home
    frame.lat[:] = users.home_lat[actor] + rng.normal(0, 0.05, m)
    frame.lon[:] = users.home_lon[actor] + rng.normal(0, 0.05, m)
    gaps = (rng.exponential(14.0, m) * HOUR_US).astype(np.int64)
    frame.ts[:] = place_cases(rng, ctx, gaps, case_of_row, n_cases)
    frame.currency[:] = ctx.currency_of(users.home_country[mule[case_of_row]])
    return frame
