"""The synthetic world: countries, merchants (MCC), users with their accounts, cards, devices and habits.

Everything is a pure, vectorised function of ``(seed, index range)``: a shard rebuilds exactly the part of
the world it needs without any global state, so the data does not depend on how many workers run.
Identifiers are pseudonymous numbers passed through a seeded bijection (nothing is derived from real data,
and an id's digits do not reveal which generator made the row).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# --- static reference tables ------------------------------------------------------------------------------

#: (ISO 3166 alpha-2, ISO 4217 currency, centroid latitude, centroid longitude, population weight).
#: Currencies are kept to ones with similar magnitudes so amount distributions stay comparable.
COUNTRIES: tuple[tuple[str, str, float, float, float], ...] = (
    ("US", "USD", 39.8, -98.6, 0.30),
    ("CA", "CAD", 45.4, -75.7, 0.05),
    ("GB", "GBP", 52.5, -1.5, 0.12),
    ("IE", "EUR", 53.3, -7.7, 0.02),
    ("FR", "EUR", 46.6, 2.4, 0.10),
    ("DE", "EUR", 51.1, 10.4, 0.11),
    ("ES", "EUR", 40.4, -3.7, 0.06),
    ("IT", "EUR", 42.8, 12.5, 0.06),
    ("NL", "EUR", 52.2, 5.3, 0.04),
    ("BE", "EUR", 50.6, 4.6, 0.02),
    ("PT", "EUR", 39.6, -8.0, 0.02),
    ("AT", "EUR", 47.6, 14.1, 0.02),
    ("CH", "CHF", 46.8, 8.2, 0.02),
    ("AU", "AUD", -25.3, 133.8, 0.06),
)
COUNTRY_CODES: tuple[str, ...] = tuple(c[0] for c in COUNTRIES)
CURRENCY_CODES: tuple[str, ...] = ("USD", "CAD", "GBP", "EUR", "CHF", "AUD")
COUNTRY_CURRENCY = np.array([CURRENCY_CODES.index(c[1]) for c in COUNTRIES], dtype=np.int16)
COUNTRY_LAT = np.array([c[2] for c in COUNTRIES])
COUNTRY_LON = np.array([c[3] for c in COUNTRIES])
COUNTRY_WEIGHT = np.array([c[4] for c in COUNTRIES])

#: Merchant categories: (MCC, log-mean amount, log-sd, share of ecommerce, popularity weight).
MCCS: tuple[tuple[str, float, float, float, float], ...] = (
    ("5411", np.log(42.0), 0.75, 0.10, 0.20),  # grocery
    ("5812", np.log(38.0), 0.65, 0.05, 0.10),  # restaurants
    ("5814", np.log(12.0), 0.55, 0.15, 0.10),  # fast food
    ("5541", np.log(48.0), 0.50, 0.02, 0.08),  # fuel
    ("5311", np.log(75.0), 0.90, 0.35, 0.05),  # department stores
    ("5732", np.log(180.0), 1.10, 0.60, 0.03),  # electronics
    ("5999", np.log(28.0), 1.00, 0.55, 0.06),  # misc retail
    ("5815", np.log(9.0), 0.80, 0.98, 0.07),  # digital goods
    ("4121", np.log(19.0), 0.60, 0.70, 0.06),  # taxis / ride share
    ("4111", np.log(4.0), 0.70, 0.30, 0.05),  # transit
    ("5912", np.log(24.0), 0.70, 0.15, 0.05),  # pharmacies
    ("7011", np.log(170.0), 0.80, 0.65, 0.02),  # hotels
    ("4511", np.log(320.0), 0.75, 0.90, 0.02),  # airlines
    ("5944", np.log(450.0), 1.00, 0.30, 0.01),  # jewellery
    ("5651", np.log(65.0), 0.80, 0.45, 0.06),  # clothing
    ("4900", np.log(85.0), 0.55, 0.85, 0.04),  # utilities
)
MCC_CODES: tuple[str, ...] = tuple(m[0] for m in MCCS)
MCC_LOG_MEAN = np.array([m[1] for m in MCCS])
MCC_LOG_SD = np.array([m[2] for m in MCCS])
MCC_ECOM_SHARE = np.array([m[3] for m in MCCS])
MCC_WEIGHT = np.array([m[4] for m in MCCS]) / sum(m[4] for m in MCCS)
#: MCCs where card testers and colluding merchants typically operate (all also common in legit data).
CNP_TEST_MCCS = np.array([MCC_CODES.index(c) for c in ("5815", "5999", "4121")])
HIGH_VALUE_MCCS = np.array([MCC_CODES.index(c) for c in ("5732", "5944", "4511", "7011", "5311")])

#: Amount under which cash movements are not reported (structuring sits just below it).
REPORTING_THRESHOLD = 10_000.00

#: Relative activity per hour of day (local time is approximated by UTC plus a per-user shift).
HOURLY_WEIGHT = np.array(
    [0.20, 0.12, 0.08, 0.06, 0.06, 0.10, 0.25, 0.50, 0.80, 0.90, 0.95, 1.00,
     1.00, 0.95, 0.90, 0.90, 0.92, 0.98, 1.00, 0.95, 0.80, 0.60, 0.45, 0.30]
)  # fmt: skip
#: Relative activity per weekday, Monday first.
WEEKDAY_WEIGHT = np.array([0.92, 0.94, 0.95, 0.97, 1.05, 1.12, 0.90])

# --- identifier spaces ------------------------------------------------------------------------------------

ID_WIDTH = {"user": 10, "account": 10, "card": 12, "device": 10, "merchant": 8, "case": 15}
ID_PREFIX = {"user": "U", "account": "A", "card": "C", "device": "D", "merchant": "M", "case": "FC"}


def scramble(values: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A seeded bijection of ``[0, 10**width)``: ``(a·x + b) mod 10**width`` with ``a`` coprime to 10.

    Distinct inputs give distinct ids (so uniqueness is structural), while neighbouring indices (e.g. the
    users a fraud scenario recruits) get unrelated-looking numbers.
    """
    width = ID_WIDTH[kind]
    modulus = 10**width
    rng = np.random.default_rng([seed, 7_919, sorted(ID_WIDTH).index(kind)])
    a = int(rng.integers(1, 99_999)) * 10 + 3  # ends in 3: odd and not a multiple of 5
    b = int(rng.integers(0, modulus))
    v = _mod(np.asarray(values, dtype=np.int64), modulus)
    # split the multiplication so a·x never overflows int64 (a < 10**6, x < 10**12)
    hi = v // 1_000_000
    lo = v - hi * 1_000_000
    return _mod(_mod(a * hi, modulus) * 1_000_000 + a * lo + b, modulus)


def _mod(v: np.ndarray, m: int) -> np.ndarray:
    """``v % m`` through floor division, which numpy vectorises for a constant divisor (``%`` it does not)."""
    return v - (v // m) * m


# --- merchants --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merchants:
    """The global merchant pool, sorted by country so a country's merchants are one contiguous block."""

    mcc: np.ndarray  # int16 index into MCC_CODES
    country: np.ndarray  # int16 index into COUNTRY_CODES
    lat: np.ndarray
    lon: np.ndarray
    price_offset: np.ndarray  # log-scale price level of the shop
    country_start: np.ndarray  # first merchant of each country
    country_count: np.ndarray

    @property
    def size(self) -> int:
        return int(self.mcc.shape[0])

    def sample_in_country(self, rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
        count = self.country_count[country]
        return self.country_start[country] + np.floor(rng.random(country.shape[0]) * count).astype(np.int64)


@lru_cache(maxsize=16)
def build_merchants(seed: int, users: int, countries: tuple[int, ...]) -> Merchants:
    """Merchants shared by every shard of a batch: a pure function of the seed and population size."""
    rng = np.random.default_rng([seed, 1])
    n = int(np.clip(users // 4, 200, 400_000))
    country_weight = COUNTRY_WEIGHT[list(countries)]
    country = np.sort(
        np.asarray(countries, dtype=np.int16)[categorical(rng, country_weight / country_weight.sum(), n)]
    )
    mcc = categorical(rng, MCC_WEIGHT, n).astype(np.int16)
    lat = COUNTRY_LAT[country] + rng.normal(0.0, 1.5, n)
    lon = COUNTRY_LON[country] + rng.normal(0.0, 2.0, n)
    start = np.zeros(len(COUNTRIES), dtype=np.int64)
    count = np.zeros(len(COUNTRIES), dtype=np.int64)
    for c in countries:
        idx = np.flatnonzero(country == c)
        start[c], count[c] = (idx[0], idx.size) if idx.size else (0, n)
    return Merchants(mcc, country, lat, lon, rng.normal(0.0, 0.25, n), start, count)


# --- users ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Users:
    """Users ``[first, first + count)`` of a batch with their habits; arrays are indexed by local user."""

    first: int
    home_country: np.ndarray
    home_lat: np.ndarray
    home_lon: np.ndarray
    spend_offset: np.ndarray  # log-scale multiplier of the user's typical amounts
    activity: InverseCdf  # cumulative activity weights (for sampling users by how much they transact)
    n_cards: np.ndarray
    n_devices: np.ndarray
    hour_shift: np.ndarray  # habitual shift of the daily rhythm, hours
    travel_rate: np.ndarray
    salary_cents: np.ndarray
    active_from: np.ndarray  # µs epoch: account opening (some accounts open inside the window)
    favourite_merchants: np.ndarray  # (count, 6) merchant indices
    payees: np.ndarray  # (count, 3) counterparty account numbers the user pays habitually

    @property
    def count(self) -> int:
        return int(self.home_country.shape[0])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Local user indices drawn in proportion to activity (heavy-tailed: a few users do a lot)."""
        return self.activity.search(rng.random(n) * self.activity.total)


#: Users are drawn in fixed blocks, each from its own seed, so a user's habits depend only on the world key
#: and the user's number — never on how the population is cut into shards (batches) or chunks (streams).
USER_BLOCK = 1024


def build_users(
    key: int,
    first: int,
    count: int,
    countries: tuple[int, ...],
    merchants: Merchants,
    start_us: int,
    end_us: int,
) -> Users:
    """Users ``[first, first + count)`` of the world ``key``."""
    first_block, last_block = first // USER_BLOCK, (first + max(count, 1) - 1) // USER_BLOCK
    blocks = [
        _user_block(key, b, countries, merchants, start_us, end_us)
        for b in range(first_block, last_block + 1)
    ]
    lo = first - first_block * USER_BLOCK
    cols = {name: np.concatenate([blk[name] for blk in blocks])[lo : lo + count] for name in blocks[0]}
    return Users(
        first=first,
        home_country=cols["home_country"],
        home_lat=cols["home_lat"],
        home_lon=cols["home_lon"],
        spend_offset=cols["spend_offset"],
        activity=InverseCdf.build(np.cumsum(cols["activity"])),
        n_cards=cols["n_cards"],
        n_devices=cols["n_devices"],
        hour_shift=cols["hour_shift"],
        travel_rate=cols["travel_rate"],
        salary_cents=cols["salary_cents"],
        active_from=cols["active_from"],
        favourite_merchants=cols["favourite_merchants"],
        payees=cols["payees"],
    )


def _user_block(
    key: int, block: int, countries: tuple[int, ...], merchants: Merchants, start_us: int, end_us: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([key, 2, block])
    count = USER_BLOCK
    weight = COUNTRY_WEIGHT[list(countries)]
    home = np.asarray(countries, dtype=np.int16)[categorical(rng, weight / weight.sum(), count)]
    activity = rng.lognormal(0.0, 0.9, count)
    span = end_us - start_us
    # 6 % of accounts are opened during the window (so "new account" alone never means fraud)
    opened_late = rng.random(count) < 0.06
    active_from = np.where(
        opened_late, start_us + (rng.random(count) * 0.8 * span).astype(np.int64), start_us
    )
    local = merchants.sample_in_country(rng, np.repeat(home, 6)).reshape(count, 6)
    online = np.floor(rng.random((count, 2)) * merchants.size).astype(np.int64)
    n_devices = 1 + (rng.random(count) < 0.45).astype(np.int64) + (rng.random(count) < 0.10).astype(np.int64)
    return {
        "home_country": home,
        "home_lat": COUNTRY_LAT[home] + rng.normal(0.0, 1.5, count),
        "home_lon": COUNTRY_LON[home] + rng.normal(0.0, 2.0, count),
        "spend_offset": rng.normal(0.0, 0.45, count),
        "activity": activity,
        "n_cards": 1 + (rng.random(count) < 0.35).astype(np.int64),
        "n_devices": n_devices,
        "hour_shift": np.round(rng.normal(0.0, 1.2, count)).astype(np.int64),
        "travel_rate": rng.beta(0.6, 14.0, count),
        "salary_cents": (np.round(rng.lognormal(np.log(3_200.0), 0.45, count), -1) * 100).astype(np.int64),
        "active_from": active_from,
        "favourite_merchants": np.concatenate([local[:, :4], online], axis=1),
        "payees": 5_000_000_000 + np.floor(rng.random((count, 3)) * 4_000_000_000).astype(np.int64),
    }


def user_device_number(global_user: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Device number of a user's k-th own device (< 3 per user)."""
    return np.asarray(global_user, dtype=np.int64) * 4 + k


def user_card_number(global_user: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.asarray(global_user, dtype=np.int64) * 4 + k


#: Device numbers at or above this belong to fraudsters (never owned by the user they act on);
#: the scramble bijection hides the split in the printed id.
FOREIGN_DEVICE_BASE = 4_000_000_000


def device_ip(device_number: np.ndarray, seed: int) -> np.ndarray:
    """The usual IP of a device, as a uint32 inside a private or shared (RFC 1918 / RFC 6598) range."""
    h = mix64(np.asarray(device_number, dtype=np.uint64) ^ np.uint64(seed & 0xFFFFFFFF))
    return private_ip(h)


def private_ip(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes onto 10.0.0.0/8 (70 %), 100.64.0.0/10 (20 %, mobile CGNAT) and 192.168.0.0/16."""
    h = np.asarray(h, dtype=np.uint64)
    low = (h & np.uint64(0xFFFFFFFF)).astype(np.int64)
    bucket = (h >> np.uint64(40)).astype(np.int64) % 10
    ten = (10 << 24) | (low & 0xFFFFFF)
    cgnat = (100 << 24) | (64 << 16) | (low & 0x3FFFFF)
    home = (192 << 24) | (168 << 16) | (low & 0xFFFF)
    ip = np.where(bucket < 7, ten, np.where(bucket < 9, cgnat, home))
    # avoid network and broadcast-looking host parts
    return np.where((ip & 0xFF) == 0, ip | 1, np.where((ip & 0xFF) == 255, ip - 1, ip))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast deterministic hash of integer arrays."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def categorical(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """Vectorised categorical draw (``rng.choice`` with p does the same but slower for large n)."""
    cdf = np.cumsum(p)
    u = rng.random(n) * cdf[-1]
    if cdf.size > 16:
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(p) - 1)
    # few categories: counting the bounds below u is searchsorted(side="right") without its branch misses
    k = np.zeros(n, dtype=np.int64)
    for bound in cdf[:-1]:
        k += u >= bound
    return k


@dataclass(frozen=True)
class InverseCdf:
    """``np.searchsorted(cdf, u, side="right")`` for many random ``u`` at a fraction of its cost.

    Binary search over random queries is dominated by branch misses (~90 ns a query for a few thousand
    entries); a guide table of equal-width bins gives the answer directly for most queries and a short
    vectorised walk corrects the rest, with exactly the same result.
    """

    cdf: np.ndarray  # non-decreasing, last entry > 0
    guide: np.ndarray  # searchsorted(cdf, bin lower edge, "right") for every bin
    padded: np.ndarray  # -inf, cdf..., +inf: lets the walk read cdf[i - 1] and cdf[i] without bounds checks
    bins_per_unit: float

    @classmethod
    def build(cls, cdf: np.ndarray, bins_per_entry: int = 4) -> InverseCdf:
        cdf = np.asarray(cdf, dtype=np.float64)
        bins = max(1, bins_per_entry * cdf.size)
        total = float(cdf[-1])
        edges = np.arange(bins, dtype=np.float64) * (total / bins)
        guide = np.searchsorted(cdf, edges, side="right").astype(np.int64)
        padded = np.concatenate([[-np.inf], cdf, [np.inf]])
        return cls(cdf, guide, padded, bins / total)

    @property
    def total(self) -> float:
        return float(self.cdf[-1])

    def search(self, u: np.ndarray) -> np.ndarray:
        b = np.clip((u * self.bins_per_unit).astype(np.int64), 0, self.guide.size - 1)
        answer = self.guide[b]
        padded = self.padded
        # walk up while cdf[answer] <= u, down while cdf[answer - 1] > u (float edges of the bins)
        todo = np.flatnonzero(padded[answer + 1] <= u)
        while todo.size:
            answer[todo] += 1
            todo = todo[padded[answer[todo] + 1] <= u[todo]]
        todo = np.flatnonzero(padded[answer] > u)
        while todo.size:
            answer[todo] -= 1
            todo = todo[padded[answer[todo]] > u[todo]]
        return np.minimum(answer, self.cdf.size)
