"""Business rules: global structure (DESIGN.md) and the signature of each fraud scenario.

Row-local rules are decided inside the block. Rules that relate rows (a chargeback needs its earlier
purchase, a takeover device must be new to the user, a synthetic identity has no legit history…) may
cross block boundaries, so a block resolves what it can and hands 8-byte keys to the merge; the final
decision is taken by :func:`resolve` once every block is in.
"""

from __future__ import annotations

import numpy as np

from fraudgen.schema import CHANNELS, SCENARIOS, TRANSACTION_TYPES
from fraudgen.validate.hashing import NULL_HASH, combine, hash_strings
from fraudgen.validate.schema_checks import Columns, examples
from fraudgen.validate.summary import BlockSummary, CheckCount, Needles
from fraudgen.world import REPORTING_THRESHOLD

T = {name: i for i, name in enumerate(TRANSACTION_TYPES)}
C = {name: i for i, name in enumerate(CHANNELS)}
S = {name: i for i, name in enumerate(SCENARIOS)}

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


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    return np.unique(values)


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
    merchant = _hash(cols, "merchant_id")
    case = _hash(cols, "fraud_case_id")
    if cols.cents is not None and cols.ts is not None:
        purchase = np.flatnonzero(tt == T["purchase"])
        chargeback = np.flatnonzero(tt == T["chargeback"])
        rows = np.concatenate([purchase, chargeback])
        key = combine(user[rows], merchant[rows], cols.cents[rows], case[rows])
        p_key, c_key = key[: purchase.size], key[purchase.size :]
        order = np.lexsort((cols.ts[purchase], p_key))
        sorted_key = p_key[order]
        first = np.ones(sorted_key.size, dtype=bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        u_key, u_ts = sorted_key[first], cols.ts[purchase][order][first]
        summary.purchase_keys.append(u_key)
        summary.purchase_min_ts.append(u_ts)
        c_ts = cols.ts[chargeback]
        found = _found_earlier(u_key, u_ts, c_key, c_ts)
        lost = ~found
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
    _haystack(summary, "user", user[legit & not_identity])
    _absent(
        summary,
        cols,
        "rules.account_takeover_known_device",
        "user_device",
        sc == S["account_takeover"],
        combine(user, device),
    )
    new_payee = ((sc == S["account_takeover"]) | (sc == S["phishing"])) & (tt == T["transfer"])
    _absent(
        summary,
        cols,
        "rules.fraud_payee_not_new",
        "user_counterparty",
        new_payee,
        combine(user, counterparty),
    )
    _absent(summary, cols, "rules.identity_theft_has_legit_history", "user", sc == S["identity_theft"], user)
    for scenario in SCENARIOS:
        rows = sc == S[scenario]
        if rows.any():
            summary.scenario_cases.setdefault(scenario, []).append(np.unique(case[rows]))
    for scenario in CASE_MERCHANTS:
        rows = sc == S[scenario]
        if rows.any():
            pairs = np.unique(np.stack([case[rows], merchant[rows]], axis=1), axis=0)
            summary.case_merchants.setdefault(scenario, []).append(pairs)


def _found_earlier(u_key: np.ndarray, u_ts: np.ndarray, key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    if u_key.size == 0:
        return np.zeros(key.size, dtype=bool)
    pos = np.minimum(np.searchsorted(u_key, key), u_key.size - 1)
    return (u_key[pos] == key) & (u_ts[pos] < ts)


def _haystack(summary: BlockSummary, name: str, keys: np.ndarray) -> None:
    summary.haystacks.setdefault(name, []).append(_sorted_unique(keys))


def _absent(
    summary: BlockSummary, cols: Columns, rule: str, haystack: str, mask: np.ndarray, keys: np.ndarray
) -> None:
    rows = np.flatnonzero(mask)
    needles = summary.absent.setdefault(f"{rule}|{haystack}", Needles())
    if rows.size:
        ids = [str(i) for i in cols.ids.take(rows[:10_000]).to_pylist()]
        needles.extend(Needles(keys[rows], np.zeros(rows.size, np.int64), ids))


def resolve(summary: BlockSummary) -> dict[str, CheckCount]:
    """Decide the cross-block rules on a merged summary."""
    out: dict[str, CheckCount] = {}
    cb = summary.chargebacks
    if cb.key.size:
        # few needles, many sorted per-block arrays: binary-search each array instead of sorting them all
        found = np.zeros(cb.key.size, dtype=bool)
        for keys, ts in zip(summary.purchase_keys, summary.purchase_min_ts, strict=True):
            found |= _found_earlier(keys, ts, cb.key, cb.ts)
        lost = ~found
        if lost.any():
            c = out.setdefault("rules.chargeback_without_purchase", CheckCount())
            c.add(int(lost.sum()), [cb.ids[i] for i in np.flatnonzero(lost)[:5] if i < len(cb.ids)])
    for name, needles in summary.absent.items():
        rule, haystack = name.split("|", 1)
        if needles.key.size == 0:
            continue
        arrays = summary.haystacks.get(haystack, [])
        hay = np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.uint64)
        pos = np.minimum(np.searchsorted(hay, needles.key), max(hay.size - 1, 0))
        hit = (hay[pos] == needles.key) if hay.size else np.zeros(needles.key.size, dtype=bool)
        if hit.any():
            c = out.setdefault(rule, CheckCount())
            c.add(int(hit.sum()), [needles.ids[i] for i in np.flatnonzero(hit)[:5] if i < len(needles.ids)])
    for scenario, limit in CASE_MERCHANTS.items():
        parts = summary.case_merchants.get(scenario)
        if not parts:
            continue
        pairs = np.unique(np.concatenate(parts), axis=0)
        cases, per_case = np.unique(pairs[:, 0], return_counts=True)
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
