"""The closed alphabet of the row language: every token a model may emit, its field kind and its value.

One token per field value keeps a row short (~15 tokens), so a tiny model trains in minutes and a logits
mask can keep every line inside the grammar. The list order is the codec's *local* index; a model's own
token ids are looked up by string (see :mod:`fraudgen.llm.tokenizer`), so any HF tokenizer can carry it.
"""

from __future__ import annotations

import numpy as np

from fraudgen.schema import CHANNELS, SCENARIOS, STATUSES, TRANSACTION_TYPES
from fraudgen.world import COUNTRY_CODES, CURRENCY_CODES, MCC_CODES

#: Row labels: index 0 is legit, index ``s + 1`` is ``SCENARIOS[s]``.
LABELS: tuple[str, ...] = ("legit", *SCENARIOS)
MAX_AMOUNT_DIGITS = 12  # cents digits: up to 9,999,999,999.99
GAP_BUCKETS = 26  # g0: < 1 s; gB: [2^(B-1), 2^B) s; the last bucket is open-ended
MAX_DELAY_DAYS = 60
N_COMBOS = len(TRANSACTION_TYPES) * len(CHANNELS)

# field kinds
K_SPECIAL, K_LABEL, K_POS, K_COMBO, K_STATUS, K_MAG, K_CHUNK = 0, 1, 2, 3, 4, 5, 6
K_CUR, K_CTY, K_MCC, K_WDAY, K_HOUR, K_MIN, K_GAP, K_DELAY = 7, 8, 9, 10, 11, 12, 13, 14

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def _build() -> tuple[list[str], np.ndarray, np.ndarray]:
    tokens: list[tuple[str, int, int]] = [(PAD, K_SPECIAL, 0), (BOS, K_SPECIAL, 1), (EOS, K_SPECIAL, 2)]
    tokens += [(f"@{name}", K_LABEL, i) for i, name in enumerate(LABELS)]
    tokens += [("S", K_POS, 1), ("C", K_POS, 0)]
    tokens += [
        (f"T:{t}/{c}", K_COMBO, ti * len(CHANNELS) + ci)
        for ti, t in enumerate(TRANSACTION_TYPES)
        for ci, c in enumerate(CHANNELS)
    ]
    tokens += [(s, K_STATUS, i) for i, s in enumerate(STATUSES)]
    tokens += [(f"a{d}", K_MAG, d) for d in range(1, MAX_AMOUNT_DIGITS + 1)]
    # amount chunks: a 1-digit lead "1".."9" and 2-digit groups "00".."99" (also 2-digit leads)
    tokens += [(str(v), K_CHUNK, v) for v in range(1, 10)]
    tokens += [(f"{v:02d}", K_CHUNK, v) for v in range(100)]
    tokens += [(c, K_CUR, i) for i, c in enumerate(CURRENCY_CODES)]
    tokens += [(c, K_CTY, i) for i, c in enumerate(COUNTRY_CODES)]
    tokens += [(f"m{m}", K_MCC, i) for i, m in enumerate(MCC_CODES)] + [("m-", K_MCC, -1)]
    tokens += [(f"w{d}", K_WDAY, d) for d in range(7)]
    tokens += [(f"h{h}", K_HOUR, h) for h in range(24)]
    tokens += [(f"n{m}", K_MIN, m) for m in range(60)]
    tokens += [(f"g{b}", K_GAP, b) for b in range(GAP_BUCKETS)]
    tokens += [(f"d{d}", K_DELAY, d) for d in range(MAX_DELAY_DAYS + 1)] + [("d-", K_DELAY, -1)]
    names = [t[0] for t in tokens]
    assert len(set(names)) == len(names)
    return names, np.array([t[1] for t in tokens], np.int8), np.array([t[2] for t in tokens], np.int64)


TOKENS, KIND, VALUE = _build()
INDEX: dict[str, int] = {t: i for i, t in enumerate(TOKENS)}
L_PAD, L_BOS, L_EOS = INDEX[PAD], INDEX[BOS], INDEX[EOS]
LABEL_TOKEN = np.array([INDEX[f"@{name}"] for name in LABELS], np.int64)
COMBO_TOKEN = np.array([INDEX[f"T:{t}/{c}"] for t in TRANSACTION_TYPES for c in CHANNELS], np.int64)
STATUS_TOKEN = np.array([INDEX[s] for s in STATUSES], np.int64)
MAG_TOKEN = np.array([-1] + [INDEX[f"a{d}"] for d in range(1, MAX_AMOUNT_DIGITS + 1)], np.int64)
LEAD1_TOKEN = np.array([-1] + [INDEX[str(v)] for v in range(1, 10)], np.int64)
CHUNK2_TOKEN = np.array([INDEX[f"{v:02d}"] for v in range(100)], np.int64)
CUR_TOKEN = np.array([INDEX[c] for c in CURRENCY_CODES], np.int64)
CTY_TOKEN = np.array([INDEX[c] for c in COUNTRY_CODES], np.int64)
MCC_TOKEN = np.array([INDEX[f"m{m}"] for m in MCC_CODES] + [INDEX["m-"]], np.int64)  # [-1] → "m-"
WDAY_TOKEN = np.array([INDEX[f"w{d}"] for d in range(7)], np.int64)
HOUR_TOKEN = np.array([INDEX[f"h{h}"] for h in range(24)], np.int64)
MIN_TOKEN = np.array([INDEX[f"n{m}"] for m in range(60)], np.int64)
GAP_TOKEN = np.array([INDEX[f"g{b}"] for b in range(GAP_BUCKETS)], np.int64)
DELAY_TOKEN = np.array([INDEX[f"d{d}"] for d in range(MAX_DELAY_DAYS + 1)] + [INDEX["d-"]], np.int64)
POS_TOKEN = np.array([INDEX["C"], INDEX["S"]], np.int64)


def label_index(name: str) -> int:
    """Index of a row label; a clear error names the unknown scenario and the known ones."""
    if name not in LABELS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(LABELS)}")
    return LABELS.index(name)
