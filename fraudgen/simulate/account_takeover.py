"""Account takeover: the account is suddenly used from a device the user never had and a fresh IP, often
from another country (impossible travel), to send high-value transfers to new counterparties."""

from __future__ import annotations

import numpy as np

from fraudgen.simulate.context import (
    MINUTE_US,
    ShardContext,
    case_frame,
    place_cases,
    random_ips,
    to_cents,
    user_location,
)
from fraudgen.simulate.frame import CHANNEL, STATUS, TYPE, Frame
from fraudgen.world import FOREIGN_DEVICE_BASE

MIN_CASE_SIZE = 1


def sample_case_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    return 1 + rng.binomial(4, 0.45, n)


def build(ctx: ShardContext, sizes: np.ndarray, rng: np.random.Generator, cases: np.ndarray) -> Frame:
    n_cases = sizes.size
    frame, case_of_row, _ = case_frame(sizes, cases)
    m = case_of_row.size
    victim = np.floor(rng.random(n_cases) * ctx.users.count).astype(np.int64)
    home = ctx.users.home_country[victim]
    abroad = rng.random(n_cases) < 0.6
    where = np.where(abroad, ctx.other_country(rng, home), home)
    country, lat, lon = user_location(rng, ctx, victim, where)
    frame.user[:] = ctx.users.first + victim[case_of_row]
    frame.ttype[:] = TYPE["transfer"]
    frame.channel[:] = np.where(rng.random(n_cases) < 0.6, CHANNEL["online_banking"], CHANNEL["mobile_app"])[
        case_of_row
    ]
    frame.device[:] = (FOREIGN_DEVICE_BASE + 1_000_000_000 + cases % 1_000_000_000)[case_of_row]
    frame.ip[:] = random_ips(rng, n_cases)[case_of_row]
    # one or two mule payees per case, never the victim's habitual ones
    payees = 5_000_000_000 + np.floor(rng.random((n_cases, 2)) * 4_000_000_000).astype(np.int64)
    frame.counterparty[:] = payees[case_of_row, (rng.random(m) < 0.35).astype(np.int64)]
    frame.country[:], frame.lat[:], frame.lon[:] = country[case_of_row], lat[case_of_row], lon[case_of_row]
    amount = rng.lognormal(np.log(2_400.0) + 0.5 * ctx.users.spend_offset[victim[case_of_row]], 0.75)
    amount = np.where(rng.random(m) < 0.3, np.round(amount, -2), amount)
    frame.cents[:] = to_cents(np.maximum(amount, 150.0))
    frame.status[:] = np.where(rng.random(m) < 0.15, STATUS["declined"], STATUS["approved"])
    frame.ts[:] = place_cases(
        rng, ctx, (rng.exponential(18.0, m) * MINUTE_US).astype(np.int64), case_of_row, n_cases
    )
    frame.currency[:] = ctx.currency_of(home[case_of_row])
    return frame
