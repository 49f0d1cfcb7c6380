"""Shared building blocks of the generators: the shard's world and vectorised sampling helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraudgen.simulate.frame import CHANNEL, TYPE, Frame
from fraudgen.world import (
    COUNTRY_CURRENCY,
    COUNTRY_LAT,
    COUNTRY_LON,
    HOURLY_WEIGHT,
    WEEKDAY_WEIGHT,
    Merchants,
    Users,
    device_ip,
    mix64,
    private_ip,
)

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
MINUTE_US = 60_000_000
_PEAK = float(HOURLY_WEIGHT.max() * WEEKDAY_WEIGHT.max())


@dataclass(frozen=True)
class ShardContext:
    """Everything a generator needs about its shard; built once per shard, read-only."""

    seed: int
    shard: int
    start_us: int
    end_us: int
    users: Users
    merchants: Merchants
    countries: tuple[int, ...]
    forced_currency: int  # index into CURRENCY_CODES, or -1 for the country's own currency
    identity_user_start: int  # first user number reserved for this shard's synthetic identities

    def currency_of(self, country: np.ndarray) -> np.ndarray:
        if self.forced_currency >= 0:
            return np.full(country.shape[0], self.forced_currency, dtype=np.int16)
        return COUNTRY_CURRENCY[country]

    def case_number(self, scenario: int, local_case: np.ndarray) -> np.ndarray:
        """Global, batch-unique fraud case numbers: (shard, scenario, case) packed into one integer."""
        return (self.shard * 8 + scenario) * 10_000_000 + local_case

    def other_country(self, rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
        """A country other than ``home`` among the request's countries (``home`` itself if only one)."""
        options = np.asarray(self.countries, dtype=np.int16)
        if options.size == 1:
            return home.copy()
        pick = options[np.floor(rng.random(home.shape[0]) * options.size).astype(np.int64)]
        clash = pick == home
        pick[clash] = options[(np.searchsorted(options, home[clash]) + 1) % options.size]
        return pick


def diurnal_times(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, hour_shift: np.ndarray | None = None
) -> np.ndarray:
    """Timestamps in ``[lo, hi)`` following the daily and weekly rhythm (vectorised rejection sampling)."""
    n = lo.shape[0]
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    shift = np.zeros(n, dtype=np.int64) if hour_shift is None else hour_shift
    candidate = lo.copy()
    for _ in range(16):
        if todo.size == 0:
            break
        span = np.maximum(hi[todo] - lo[todo], 1)
        candidate = lo[todo] + (rng.random(todo.size) * span).astype(np.int64)
        hour = (candidate // HOUR_US + shift[todo]) % 24
        weekday = (candidate // DAY_US + 3) % 7  # 1970-01-01 was a Thursday
        keep = rng.random(todo.size) * _PEAK < HOURLY_WEIGHT[hour] * WEEKDAY_WEIGHT[weekday]
        out[todo[keep]] = candidate[keep]
        todo = todo[~keep]
    if todo.size:
        out[todo] = lo[todo] + (rng.random(todo.size) * np.maximum(hi[todo] - lo[todo], 1)).astype(np.int64)
    return out


def expand_cases(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For cases of the given sizes: the case index of every row and the row's position inside its case."""
    case_of_row = np.repeat(np.arange(sizes.shape[0]), sizes)
    starts = np.cumsum(sizes) - sizes
    position = np.arange(case_of_row.shape[0]) - starts[case_of_row]
    return case_of_row, position


def case_starts(rng: np.random.Generator, ctx: ShardContext, n_cases: int, duration_us: np.ndarray) -> np.ndarray:
    """Start times for cases so that each case (of the given duration) fits in the window when possible."""
    latest = np.maximum(ctx.end_us - duration_us - 1, ctx.start_us)
    lo = np.full(n_cases, ctx.start_us, dtype=np.int64)
    return diurnal_times(rng, lo, latest + 1)


def clip_to_window(ctx: ShardContext, ts: np.ndarray) -> np.ndarray:
    return np.clip(ts, ctx.start_us, ctx.end_us - 1)


def user_location(
    rng: np.random.Generator, ctx: ShardContext, local_user: np.ndarray, country: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Country and coordinates of users: at home, or around the centroid of ``country`` when given."""
    users = ctx.users
    home = users.home_country[local_user]
    if country is None:
        return home, users.home_lat[local_user] + rng.normal(0, 0.05, home.size), users.home_lon[
            local_user
        ] + rng.normal(0, 0.05, home.size)
    away = country != home
    lat = np.where(away, COUNTRY_LAT[country] + rng.normal(0, 1.2, home.size), users.home_lat[local_user])
    lon = np.where(away, COUNTRY_LON[country] + rng.normal(0, 1.6, home.size), users.home_lon[local_user])
    return country, lat, lon


def random_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fresh IPs from the same private/shared ranges that users' own devices use."""
    return private_ip(mix64(rng.integers(0, 2**62, n, dtype=np.int64).astype(np.uint64)))


def own_device(rng: np.random.Generator, ctx: ShardContext, local_user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One of the user's own devices (mostly the primary one) and the IP it usually has (sometimes mobile)."""
    n_dev = ctx.users.n_devices[local_user]
    k = np.where(rng.random(local_user.size) < 0.8, 0, np.floor(rng.random(local_user.size) * n_dev)).astype(np.int64)
    device = (ctx.users.first + local_user) * 4 + k
    ip = np.where(rng.random(local_user.size) < 0.12, random_ips(rng, local_user.size), device_ip(device, ctx.seed))
    return device, ip


def fill_merchant(frame: Frame, rows: np.ndarray, merchant: np.ndarray, merchants: Merchants) -> None:
    frame.merchant[rows] = merchant
    frame.mcc[rows] = merchants.mcc[merchant]


def set_codes(frame: Frame, rows: np.ndarray, *, ttype: str, channel: str | np.ndarray) -> None:
    frame.ttype[rows] = TYPE[ttype]
    frame.channel[rows] = CHANNEL[channel] if isinstance(channel, str) else channel


def to_cents(amount: np.ndarray, minimum: int = 1) -> np.ndarray:
    return np.maximum(np.round(amount * 100.0), minimum).astype(np.int64)


def cumsum_within(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every group (rows of a group are contiguous)."""
    total = np.cumsum(values)
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    base = np.repeat(total[first] - values[first], np.diff(np.r_[first, group.size]))
    return total - base


def place_cases(
    rng: np.random.Generator, ctx: ShardContext, gaps: np.ndarray, case_of_row: np.ndarray, n_cases: int
) -> np.ndarray:
    """Timestamps of case rows: each case starts at a diurnal time that leaves room for its whole
    duration, and row ``i`` of a case comes ``gaps[1..i]`` after the case start (``gaps`` of first rows
    are ignored)."""
    if case_of_row.size == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = gaps.astype(np.int64, copy=True)
    first = np.r_[0, np.flatnonzero(np.diff(case_of_row)) + 1]
    gaps[first] = 0
    offset = cumsum_within(gaps, case_of_row)
    duration = np.zeros(n_cases, dtype=np.int64)
    np.maximum.at(duration, case_of_row, offset)
    start = case_starts(rng, ctx, n_cases, duration)
    return clip_to_window(ctx, start[case_of_row] + offset)


def own_ip_of(ctx: ShardContext, device: np.ndarray) -> np.ndarray:
    """The usual IP of the given own devices."""
    return device_ip(device, ctx.seed)
