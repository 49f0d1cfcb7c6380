"""The row grammar, learnt from training lines, compiled to a DFA over the codec's local tokens.

Constraining decoding with a DFA (one allowed-token mask per state, one transition table) keeps every
sampled line parseable *and* inside what each label was seen to do in training: a card-testing line can
only be an ecommerce purchase, a laundering amount only has the digit counts seen (all < 10,000.00),
a country only goes with a currency it was seen with, a chargeback carries a dispute delay. Masking is a
tensor gather per step, so it costs the same on CPU and GPU for any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudgen.llm import vocab as V
from fraudgen.llm.codec import CHARGEBACK, N_CH, LineFields
from fraudgen.schema import MERCHANT_TYPES, TRANSACTION_TYPES

_MERCHANT_TYPE_IDX = {TRANSACTION_TYPES.index(t) for t in MERCHANT_TYPES}


def learn_grammar(lines: LineFields) -> dict[str, Any]:
    """What each label was seen to do, as a JSON-serialisable dict (stored beside the model)."""
    grammar: dict[str, Any] = {"labels": {}}
    combo = lines.combo
    for lab, name in enumerate(V.LABELS):
        sel = lines.label == lab
        if not sel.any():
            continue
        entry: dict[str, Any] = {
            "pos": sorted({int(x) for x in lines.start[sel]}),
            "pairs": sorted(
                {(int(c), int(k)) for c, k in zip(lines.currency[sel], lines.country[sel], strict=True)}
            ),
            "gaps": sorted({int(g) for g in lines.gap[sel & ~lines.start]}),
            "combos": {},
        }
        for cb in sorted({int(x) for x in combo[sel]}):
            rows = sel & (combo == cb)
            digits = np.floor(np.log10(np.maximum(lines.cents[rows], 1))).astype(int) + 1
            entry["combos"][str(cb)] = {
                "status": sorted({int(x) for x in lines.status[rows]}),
                "mag": [int(digits.min()), int(digits.max())],
                "mcc": sorted({int(x) for x in lines.mcc[rows]}),
                "delay": sorted({int(x) for x in lines.delay[rows]}),
            }
        grammar["labels"][name] = entry
    return grammar


@dataclass(frozen=True)
class Dfa:
    """``allowed[state]`` masks local tokens; ``next[state, token]`` is the following state (-1: illegal)."""

    allowed: np.ndarray  # bool (n_states, n_tokens)
    next: np.ndarray  # int32 (n_states, n_tokens)
    start: np.ndarray  # int64 (n_labels,), -1 for labels the grammar never saw
    done: int

    def labels(self) -> list[str]:
        return [name for i, name in enumerate(V.LABELS) if self.start[i] >= 0]


def build_dfa(
    grammar: dict[str, Any], countries: list[int] | None = None, currency: int | None = None
) -> Dfa:
    """Compile the grammar, optionally restricted to a request's countries and forced currency."""
    states: dict[tuple[Any, ...], int] = {}
    edges: list[dict[int, tuple[Any, ...]]] = []

    def sid(key: tuple[Any, ...]) -> int:
        if key not in states:
            states[key] = len(states)
            edges.append({})
        return states[key]

    todo: list[tuple[Any, ...]] = []
    start = np.full(len(V.LABELS), -1, np.int64)
    for name in grammar["labels"]:
        start[V.label_index(name)] = sid(("pos", name))
        todo.append(("pos", name))
    done = sid(("done",))
    edges[done][V.L_EOS] = ("done",)
    seen: set[tuple[Any, ...]] = set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        for token, nxt in _transitions(grammar, key, countries, currency).items():
            edges[sid(key)][token] = nxt
            sid(nxt)
            todo.append(nxt)
    n = len(states)
    allowed = np.zeros((n, len(V.TOKENS)), bool)
    table = np.full((n, len(V.TOKENS)), -1, np.int32)
    for i, out in enumerate(edges):
        for token, nxt in out.items():
            allowed[i, token] = True
            table[i, token] = states[nxt]
    return Dfa(allowed, table, start, done)


def _country_options(entry: dict[str, Any], cur: int | None, countries: list[int] | None) -> list[int]:
    seen = [k for c, k in entry["pairs"] if cur is None or c == cur]
    if countries is not None:
        seen = [k for k in seen if k in countries] or list(countries)
    return sorted(set(seen)) or sorted({k for _, k in entry["pairs"]})


def _transitions(
    grammar: dict[str, Any], key: tuple[Any, ...], countries: list[int] | None, currency: int | None
) -> dict[int, tuple[Any, ...]]:
    stage, name = key[0], key[1] if len(key) > 1 else None
    if stage in ("done", "eos"):
        return {V.L_EOS: ("done",)}
    entry = grammar["labels"][name]
    if stage == "pos":
        return {int(V.POS_TOKEN[p]): ("combo", name, p) for p in entry["pos"]}
    pos = key[2]
    if stage == "combo":
        return {int(V.COMBO_TOKEN[int(c)]): ("status", name, pos, int(c)) for c in entry["combos"]}
    cb = key[3]
    spec = entry["combos"][str(cb)]
    if stage == "status":
        return {int(V.STATUS_TOKEN[s]): ("mag", name, pos, cb) for s in spec["status"]}
    if stage == "mag":
        lo, hi = spec["mag"]
        return {int(V.MAG_TOKEN[d]): ("lead", name, pos, cb, d) for d in range(lo, hi + 1)}
    if stage == "lead":
        d = key[4]
        rest = (d - 1) // 2 if d % 2 else (d - 2) // 2
        nxt = ("chunk", name, pos, cb, rest) if rest else ("cur", name, pos, cb)
        values = range(1, 10) if d % 2 else range(10, 100)
        tokens = V.LEAD1_TOKEN if d % 2 else V.CHUNK2_TOKEN
        return {int(tokens[v]): nxt for v in values}
    if stage == "chunk":
        rest = key[4] - 1
        nxt = ("chunk", name, pos, cb, rest) if rest else ("cur", name, pos, cb)
        return {int(V.CHUNK2_TOKEN[v]): nxt for v in range(100)}
    if stage == "cur":
        if currency is not None:
            return {int(V.CUR_TOKEN[currency]): ("cty", name, pos, cb, currency)}
        options = sorted({c for c, k in entry["pairs"] if countries is None or k in countries})
        options = options or sorted({c for c, _ in entry["pairs"]})
        return {int(V.CUR_TOKEN[c]): ("cty", name, pos, cb, c) for c in options}
    if stage == "cty":
        cur = None if currency is not None else key[4]
        return {int(V.CTY_TOKEN[k]): ("mcc", name, pos, cb) for k in _country_options(entry, cur, countries)}
    if stage == "mcc":
        mccs = spec["mcc"] if cb // N_CH in _MERCHANT_TYPE_IDX else [-1]
        return {int(V.MCC_TOKEN[m]): (("w", name, pos, cb) if pos else ("gap", name, pos, cb)) for m in mccs}
    if stage == "w":
        return {int(V.WDAY_TOKEN[d]): ("h", name, pos, cb) for d in range(7)}
    if stage == "h":
        return {int(V.HOUR_TOKEN[h]): ("n", name, pos, cb) for h in range(24)}
    if stage == "n":
        return {int(V.MIN_TOKEN[m]): ("delay", name, pos, cb) for m in range(60)}
    if stage == "gap":
        return {int(V.GAP_TOKEN[g]): ("delay", name, pos, cb) for g in entry["gaps"] or [0]}
    if stage == "delay":
        if cb // N_CH != CHARGEBACK:
            return {V.L_EOS: ("done",)}
        delays = [d for d in spec["delay"] if d >= -1] or [-1]
        return {int(V.DELAY_TOKEN[d]): ("eos",) for d in delays}
    raise AssertionError(f"unknown grammar stage {stage!r}")
