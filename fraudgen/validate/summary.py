"""The per-block validation summary: small, picklable and mergeable.

A Ray Data worker turns each block into a :class:`BlockSummary`; the driver merges them. Everything in it
is either a count, a bounded sample (reservoirs keep the rows with the smallest priority, which makes the
merge of two samples exactly a sample of the union, whatever the block boundaries), or compact 8-byte key
arrays for the checks that must see the whole batch (dedup, chargeback → purchase, user history).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fraudgen.validate.hashing import sorted_unique

MAX_EXAMPLES = 5
#: reservoir groups: "legit" and the seven scenario names
LEGIT = "legit"


@dataclass
class CheckCount:
    """How many rows failed one check, and a few transaction ids (or values) to look at."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, count: int, examples: Iterable[str] = ()) -> None:
        self.count += int(count)
        room = MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(str(e) for e in list(examples)[:room])


@dataclass
class Needles:
    """Rows that must find a partner elsewhere in the batch (key, timestamp, transaction id)."""

    key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ids: list[str] = field(default_factory=list)

    def extend(self, other: Needles) -> None:
        self.key = np.concatenate([self.key, other.key])
        self.ts = np.concatenate([self.ts, other.ts])
        self.ids.extend(other.ids)


@dataclass
class BlockSummary:
    rows: int = 0
    blocks: int = 0
    window: tuple[int, int] | None = None  # µs epoch, as checked
    ts_min: int | None = None
    ts_max: int | None = None
    checks: dict[str, CheckCount] = field(default_factory=dict)
    column_errors: dict[str, str] = field(default_factory=dict)  # column → missing / wrong type message
    signature_checked: int = 0
    signature_mismatch: int = 0
    # full-batch keys (lists of per-block arrays, concatenated lazily)
    signature_keys: list[np.ndarray] = field(default_factory=list)
    purchase_keys: list[np.ndarray] = field(default_factory=list)  # every purchase (key, ts), unsorted
    purchase_min_ts: list[np.ndarray] = field(default_factory=list)
    chargebacks: Needles = field(default_factory=Needles)  # unresolved within their block
    #: keys that must NOT be found in the haystack of the same name (e.g. a takeover device among the
    #: user's own devices); both sides are kept and resolved once the whole batch is merged
    absent: dict[str, Needles] = field(default_factory=dict)
    haystacks: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name → distinct keys per block
    case_merchants: dict[str, list[np.ndarray]] = field(default_factory=dict)  # scenario → (case, merchant)
    scenario_cases: dict[str, list[np.ndarray]] = field(default_factory=dict)  # scenario → case hashes
    # counts for the report and the fraud-rate / mix gates
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # column → value → rows
    scenario_rows: dict[str, int] = field(default_factory=dict)
    card_testing: dict[str, int] = field(default_factory=dict)  # rows, small, declined
    hourly: dict[str, np.ndarray] = field(default_factory=dict)  # legit / fraud → 24 counts
    amount_hist: dict[str, np.ndarray] = field(default_factory=dict)  # group → counts on AMOUNT_BINS
    # bounded samples
    sample_size: int = 20_000
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # group → column → values
    user_sample_size: int = 2_000
    user_rows: dict[str, np.ndarray] = field(default_factory=dict)  # user, ts of the bottom-k users

    def case_keys_count(self, scenario: str) -> int:
        """Distinct fraud cases of a scenario in the whole (merged) batch."""
        parts = self.scenario_cases.get(scenario)
        return int(sorted_unique(np.concatenate(parts)).size) if parts else 0

    def check(self, name: str) -> CheckCount:
        return self.checks.setdefault(name, CheckCount())


#: log-spaced amount bins from 0.01 to 10^6 for the report histograms (full data, not sampled)
AMOUNT_BINS = np.concatenate([[-np.inf, 0.0], np.logspace(-2, 6, 49), [np.inf]])


def bottom_k(columns: dict[str, np.ndarray], k: int, priority: str = "priority") -> dict[str, np.ndarray]:
    """Keep the ``k`` rows of smallest priority (ties broken by position, deterministic)."""
    keys = columns[priority]
    if keys.shape[0] <= k:
        return columns
    keep = np.argpartition(keys, k - 1)[:k]
    keep.sort()
    return {name: values[keep] for name, values in columns.items()}


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def bottom_k_users(rows: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Keep every row of the ``k`` users with the smallest user hash.

    A user among the k smallest of the whole batch is also among the k smallest of every block it appears
    in, so merging per-block bottom-k sets gives complete histories for exactly the global bottom-k users.
    """
    if not rows or rows["user"].shape[0] <= k:  # at most k users
        return rows
    user = rows["user"]
    # the distinct values among the m smallest rows are exactly the smallest distinct users of all rows, so
    # a partition (linear) of a few times k rows replaces sorting the block; m grows with the rows per user
    m = min(user.shape[0], 4 * k)
    while True:
        users = sorted_unique(np.partition(user, m - 1)[:m] if m < user.shape[0] else user)
        if users.shape[0] >= k or m == user.shape[0]:
            break
        per_user = m / max(users.shape[0], 1)
        m = min(user.shape[0], max(2 * m, int(1.5 * k * per_user)))
    if users.shape[0] <= k:
        return rows
    limit = users[k - 1]
    keep = rows["user"] <= limit
    return {name: values[keep] for name, values in rows.items()}


def merge(summaries: Iterable[BlockSummary]) -> BlockSummary:
    """Combine block summaries into one (associative; the result is again a BlockSummary)."""
    out = BlockSummary()
    first = True
    sample_parts: dict[str, list[dict[str, np.ndarray]]] = {}
    user_parts: list[dict[str, np.ndarray]] = []
    for s in summaries:
        if first:
            out.sample_size, out.user_sample_size, out.window = s.sample_size, s.user_sample_size, s.window
            first = False
        out.rows += s.rows
        out.blocks += max(s.blocks, 1) if s.rows or s.blocks else 0
        if s.ts_min is not None:
            out.ts_min = s.ts_min if out.ts_min is None else min(out.ts_min, s.ts_min)
            out.ts_max = s.ts_max if out.ts_max is None or s.ts_max is None else max(out.ts_max, s.ts_max)
        for name, c in s.checks.items():
            out.check(name).add(c.count, c.examples)
        for column, message in s.column_errors.items():
            out.column_errors.setdefault(column, message)
        out.signature_checked += s.signature_checked
        out.signature_mismatch += s.signature_mismatch
        for attr in ("signature_keys", "purchase_keys", "purchase_min_ts"):
            getattr(out, attr).extend(getattr(s, attr))
        out.chargebacks.extend(s.chargebacks)
        for name, needles in s.absent.items():
            out.absent.setdefault(name, Needles()).extend(needles)
        for name, arrays in s.haystacks.items():
            out.haystacks.setdefault(name, []).extend(arrays)
        for scenario, parts in s.case_merchants.items():
            out.case_merchants.setdefault(scenario, []).extend(parts)
        for scenario, parts in s.scenario_cases.items():
            out.scenario_cases.setdefault(scenario, []).extend(parts)
        for column, values in s.counts.items():
            target = out.counts.setdefault(column, {})
            for value, n in values.items():
                target[value] = target.get(value, 0) + n
        for name, n in s.scenario_rows.items():
            out.scenario_rows[name] = out.scenario_rows.get(name, 0) + n
        for name, n in s.card_testing.items():
            out.card_testing[name] = out.card_testing.get(name, 0) + n
        for group, hist in s.hourly.items():
            out.hourly[group] = out.hourly[group] + hist if group in out.hourly else hist.copy()
        for group, hist in s.amount_hist.items():
            out.amount_hist[group] = (
                out.amount_hist[group] + hist if group in out.amount_hist else hist.copy()
            )
        for group, sample in s.samples.items():
            sample_parts.setdefault(group, []).append(sample)
        if s.user_rows:
            user_parts.append(s.user_rows)
    out.samples = {g: bottom_k(concat_columns(parts), out.sample_size) for g, parts in sample_parts.items()}
    out.user_rows = bottom_k_users(concat_columns(user_parts), out.user_sample_size)
    return out
