"""Business rules: global structure (DESIGN.md) and the signature of each fraud scenario.

Row-local rules are decided inside the block. Rules that relate rows (a chargeback needs its earlier
purchase, a takeover device must be new to the user, a synthetic identity has no legit history…) may
cross block boundaries, so a block resolves what it can and hands 8-byte keys to the merge; the final
decision is taken by :func:`resolve` once every block is in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fraudgen.schema import SCENARIOS, TRANSACTION_TYPES
from fraudgen.simulate.frame import CHANNEL, SCENARIO, TYPE
from fraudgen.validate.hashing import (
    NULL_HASH,
    combine,
    dictionary_parts,
    hash_strings,
    sorted_unique,
    unique_counts,
)
from fraudgen.validate.schema_checks import Columns, examples
from fraudgen.validate.summary import BlockSummary, CheckCount, Needles
from fraudgen.world import REPORTING_THRESHOLD

T, C, S = TYPE, CHANNEL, SCENARIO  # name → code, as in the generator's integer-coded frames

#: transaction types each scenario may contain
SCENARIO_TYPES: dict[str, tuple[str, ...]] = {
    "card_testing": ("purchase",),
    "account_takeover": ("transfer",),
    "identity_theft": ("purchase", "cash_withdrawal", "transfer"),
    "merchant_fraud": ("purchase", "refund", "chargeback"),
    "money_laundering": ("deposit", "transfer"),
    "phishing": ("transfer",),
    "chargeback_fraud": ("purchase", "chargeback"),
}
_ALLOWED = np.zeros((len(SCENARIOS), len(TRANSACTION_TYPES)), dtype=bool)
for _s, _types in SCENARIO_TYPES.items():
    for _t in _types:
        _ALLOWED[S[_s], T[_t]] = True
#: most distinct merchants one case may use (card testing: up to three test shops and one cash-out shop)
CASE_MERCHANTS = {"card_testing": 4, "merchant_fraud": 1}
CARD_TESTING_SMALL_CENTS = 500


def _flag(summary: BlockSummary, cols: Columns, name: str, mask: np.ndarray) -> None:
    if mask.any():
        summary.check(name).add(int(mask.sum()), examples(cols, mask))


def _hash(cols: Columns, name: str) -> np.ndarray:
    column = cols.string(name)
    if column is None:
        return np.full(cols.n, NULL_HASH, dtype=np.uint64)
    return hash_strings(column)


def _distinct(cols: Columns, name: str, hashes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Distinct hashes of the masked rows: for a dictionary column by marking the dictionary entries used
    (no sort), else by sorting the rows' hashes."""
    column = cols.string(name)
    if column is not None and pa.types.is_dictionary(column.type):
        dictionary, raw = dictionary_parts(column)
        used = np.zeros(len(dictionary) + 1, dtype=bool)  # last slot: null (index -1)
        used[raw[mask]] = True
        return np.append(hash_strings(dictionary), NULL_HASH)[used]
    return sorted_unique(hashes[mask])


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct (a, b) rows as an (m, 2) array, ordered by their combined hash."""
    key = combine(a, b)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    keep = order[first]
    return np.stack([a[keep], b[keep]], axis=1)


def check_rules(cols: Columns, summary: BlockSummary, user_hash: np.ndarray) -> None:
    """Row rules of one block, plus the keys the cross-block rules need."""
    n = cols.n
    if n == 0:
        return
    tt, ch, sc = cols.ttype.astype(np.int64), cols.channel.astype(np.int64), cols.scenario.astype(np.int64)
    known = (tt >= 0) & (ch >= 0)
    card = cols.valid("card_id")
    merchant, mcc = cols.valid("merchant_id"), cols.valid("merchant_category")
    counterparty = cols.valid("counterparty_id")
    device, ip = cols.valid("device_id"), cols.valid("ip_address")
    card_channel = (ch == C["card_present"]) | (ch == C["ecommerce"]) | (ch == C["atm"])
    _flag(summary, cols, "rules.card_id_by_channel", known & (card_channel != card))
    _flag(summary, cols, "rules.counterparty_by_type", known & ((tt == T["transfer"]) != counterparty))
    merchant_type = (tt == T["purchase"]) | (tt == T["refund"]) | (tt == T["chargeback"])
    _flag(
        summary,
        cols,
        "rules.merchant_by_type",
        known & ((merchant_type != merchant) | (merchant_type != mcc)),
    )
    online = (ch == C["ecommerce"]) | (ch == C["mobile_app"]) | (ch == C["online_banking"])
    needs_device = online & ~((ch == C["online_banking"]) & (tt == T["deposit"]))
    _flag(summary, cols, "rules.device_by_channel", known & ((needs_device != device) | (needs_device != ip)))
    fraud = sc >= 0
    _flag(
        summary,
        cols,
        "rules.scenario_transaction_type",
        fraud & (tt >= 0) & ~_ALLOWED[np.maximum(sc, 0), np.maximum(tt, 0)],
    )
    testing = sc == S["card_testing"]
    _flag(summary, cols, "rules.card_testing_channel", testing & (ch >= 0) & (ch != C["ecommerce"]))
    if cols.cents is not None:
        limit = round(REPORTING_THRESHOLD * 100)
        _flag(
            summary,
            cols,
            "rules.money_laundering_threshold",
            (sc == S["money_laundering"]) & (cols.cents >= limit),
        )
        small = int(np.count_nonzero(testing & (cols.cents < CARD_TESTING_SMALL_CENTS)))
    else:
        small = 0
    ct = summary.card_testing
    ct["rows"] = ct.get("rows", 0) + int(np.count_nonzero(testing))
    ct["small"] = ct.get("small", 0) + small
    ct["declined"] = ct.get("declined", 0) + int(np.count_nonzero(testing & (cols.status == 1)))
    _cross_block_keys(cols, summary, user_hash, tt, sc, fraud)


def _cross_block_keys(
    cols: Columns, summary: BlockSummary, user: np.ndarray, tt: np.ndarray, sc: np.ndarray, fraud: np.ndarray
) -> None:
    """Keys for the rules that relate rows. Nothing here sorts a whole block: the rows that must find (or
    must not find) a partner are few, so they are sorted and the many candidate rows are looked up in them."""
    merchant = _hash(cols, "merchant_id")
    case = _hash(cols, "fraud_case_id")
    if cols.cents is not None and cols.ts is not None:
        purchase = np.flatnonzero(tt == T["purchase"])
        chargeback = np.flatnonzero(tt == T["chargeback"])
        rows = np.concatenate([purchase, chargeback])
        key = combine(user[rows], merchant[rows], cols.cents[rows], case[rows])
        p_key, c_key = key[: purchase.size], key[purchase.size :]
        p_ts, c_ts = cols.ts[purchase], cols.ts[chargeback]
        summary.purchase_keys.append(p_key)
        summary.purchase_min_ts.append(p_ts)
        lost = earliest(p_key, p_ts, *needle_index(c_key)) >= c_ts
        if lost.any():
            ids = cols.ids.take(chargeback[lost]).to_pylist() if lost.sum() <= 10_000 else []
            summary.chargebacks.extend(Needles(c_key[lost], c_ts[lost], [str(i) for i in ids]))
    legit = ~fraud & (sc != -2)
    device = _hash(cols, "device_id")
    counterparty = _hash(cols, "counterparty_id")
    has_device = cols.valid("device_id")
    _haystack(summary, "user_device", combine(user[legit & has_device], device[legit & has_device]))
    transfer = legit & (tt == T["transfer"])
    _haystack(summary, "user_counterparty", combine(user[transfer], counterparty[transfer]))
    not_identity = sc != S["identity_theft"]
    summary.haystacks.setdefault("user", []).append(_distinct(cols, "user_id", user, legit & not_identity))
    takeover = np.flatnonzero(sc == S["account_takeover"])
    _absent(
        summary,
        cols,
        "rules.account_takeover_known_device",
        "user_device",
        takeover,
        combine(user[takeover], device[takeover]),
    )
    new_payee = np.flatnonzero(
        ((sc == S["account_takeover"]) | (sc == S["phishing"])) & (tt == T["transfer"])
    )
    _absent(
        summary,
        cols,
        "rules.fraud_payee_not_new",
        "user_counterparty",
        new_payee,
        combine(user[new_payee], counterparty[new_payee]),
    )
    identity = np.flatnonzero(sc == S["identity_theft"])
    _absent(summary, cols, "rules.identity_theft_has_legit_history", "user", identity, user[identity])
    for scenario in SCENARIOS:
        rows = sc == S[scenario]
        if rows.any():
            summary.scenario_cases.setdefault(scenario, []).append(sorted_unique(case[rows]))
    for scenario in CASE_MERCHANTS:
        rows = sc == S[scenario]
        if rows.any():
            pairs = _unique_pairs(case[rows], merchant[rows])
            summary.case_merchants.setdefault(scenario, []).append(pairs)


def needle_index(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct needle keys, position of each needle in them)."""
    distinct = sorted_unique(key)
    return distinct, np.searchsorted(distinct, key)


def _lookup(distinct: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``keys``, positions in ``distinct``) of the keys found among the sorted needle keys.

    Keys are uniform 64-bit hashes, so when they far outnumber the needles a bitmap of the needles' low bits
    first drops almost every key with one gather; only the survivors are binary-searched (searching 150k
    random keys costs ~10 ms, the bitmap ~1 ms).
    """
    if distinct.size == 0 or keys.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    candidates = None
    if keys.size > 16 * distinct.size:
        bits = int(min(24, max(12, np.ceil(np.log2(distinct.size)) + 8)))
        low = np.uint64((1 << bits) - 1)
        bitmap = np.zeros(1 << bits, dtype=bool)
        bitmap[(distinct & low).astype(np.intp)] = True
        candidates = np.flatnonzero(bitmap[(keys & low).astype(np.intp)])
        keys = keys[candidates]
    pos = np.minimum(np.searchsorted(distinct, keys), distinct.size - 1)
    found = np.flatnonzero(distinct[pos] == keys)
    return (found if candidates is None else candidates[found]), pos[found]


def earliest(hay_key: np.ndarray, hay_ts: np.ndarray, distinct: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Per needle, the earliest timestamp among haystack rows with its key (int64 max when none)."""
    out = np.full(distinct.size, np.iinfo(np.int64).max, dtype=np.int64)
    rows, pos = _lookup(distinct, hay_key)
    np.minimum.at(out, pos, hay_ts[rows])
    return out[where]


def _haystack(summary: BlockSummary, name: str, keys: np.ndarray) -> None:
    summary.haystacks.setdefault(name, []).append(sorted_unique(keys))


def _absent(
    summary: BlockSummary, cols: Columns, rule: str, haystack: str, rows: np.ndarray, keys: np.ndarray
) -> None:
    needles = summary.absent.setdefault(f"{rule}|{haystack}", Needles())
    if rows.size:
        ids = [str(i) for i in cols.ids.take(rows[:10_000]).to_pylist()]
        needles.extend(Needles(keys, np.zeros(rows.size, np.int64), ids))


def resolve(summary: BlockSummary) -> dict[str, CheckCount]:
    """Decide the cross-block rules on a merged summary."""
    out: dict[str, CheckCount] = {}
    cb = summary.chargebacks
    if cb.key.size:
        # few needles, many per-block purchase arrays: look each purchase up among the sorted needles
        distinct, where = needle_index(cb.key)
        first = np.full(cb.key.size, np.iinfo(np.int64).max, dtype=np.int64)
        for keys, ts in zip(summary.purchase_keys, summary.purchase_min_ts, strict=True):
            np.minimum(first, earliest(keys, ts, distinct, where), out=first)
        lost = first >= cb.ts
        if lost.any():
            c = out.setdefault("rules.chargeback_without_purchase", CheckCount())
            c.add(int(lost.sum()), [cb.ids[i] for i in np.flatnonzero(lost)[:5] if i < len(cb.ids)])
    for name, needles in summary.absent.items():
        rule, haystack = name.split("|", 1)
        if needles.key.size == 0:
            continue
        distinct, where = needle_index(needles.key)
        present = np.zeros(distinct.size, dtype=bool)
        for hay in summary.haystacks.get(haystack, []):
            present[_lookup(distinct, hay)[1]] = True
        hit = present[where]
        if hit.any():
            c = out.setdefault(rule, CheckCount())
            c.add(int(hit.sum()), [needles.ids[i] for i in np.flatnonzero(hit)[:5] if i < len(needles.ids)])
    for scenario, limit in CASE_MERCHANTS.items():
        parts = summary.case_merchants.get(scenario)
        if not parts:
            continue
        merged = np.concatenate(parts)
        pairs = _unique_pairs(merged[:, 0], merged[:, 1])
        cases, per_case = unique_counts(pairs[:, 0])
        bad = per_case > limit
        if bad.any():
            c = out.setdefault(f"rules.{scenario}_merchants_per_case", CheckCount())
            c.add(int(bad.sum()), [f"case hash {int(h):016x}" for h in cases[bad][:5]])
    ct = summary.card_testing
    rows = ct.get("rows", 0)
    if rows >= 50:
        small, declined = ct.get("small", 0) / rows, ct.get("declined", 0) / rows
        if small < 0.5:
            out.setdefault("rules.card_testing_small_amounts", CheckCount()).add(
                1, [f"only {small:.0%} of {rows} card-testing rows under 5.00 (expected ≥ 50%)"]
            )
        if not 0.25 <= declined <= 0.9:
            out.setdefault("rules.card_testing_declines", CheckCount()).add(
                1, [f"{declined:.0%} of {rows} card-testing rows declined (expected 25-90%)"]
            )
    return out
