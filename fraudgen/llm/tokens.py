"""Lines ⇄ token matrices ⇄ text: the vectorised step between :class:`~fraudgen.llm.codec.LineFields` and what
the model reads and writes (a padded matrix of local token indices), plus a human-readable text form for
inspection, docs and the lossless text round trip.

Kept apart from :mod:`fraudgen.llm.codec` (rows ⇄ lines) because training and sampling need only this half
on their hot paths, and the line grammar itself lives in :mod:`fraudgen.llm.vocab`.
"""

from __future__ import annotations

import numpy as np

from fraudgen.llm import vocab as V
from fraudgen.llm.codec import N_CH, LineFields


def to_tokens(lines: LineFields) -> tuple[np.ndarray, np.ndarray]:
    """Lines → (n, width) matrix of local token indices padded with <pad>, and the lengths (vectorised)."""
    n = len(lines)
    digits = np.floor(np.log10(np.maximum(lines.cents, 1))).astype(np.int64) + 1
    n_chunks = np.where(digits % 2 == 1, (digits + 1) // 2, digits // 2)
    max_chunks = (V.MAX_AMOUNT_DIGITS + 1) // 2
    chunk_slots = np.full((n, max_chunks), -1, np.int64)
    for j in range(max_chunks):
        power = np.maximum(n_chunks - 1 - j, 0)
        value = (lines.cents // (100 ** power.astype(np.float64)).astype(np.int64)) % 100
        tok = np.where(
            j == 0,
            np.where(digits % 2 == 1, V.LEAD1_TOKEN[np.clip(value, 0, 9)], V.CHUNK2_TOKEN[value]),
            V.CHUNK2_TOKEN[value],
        )
        chunk_slots[:, j] = np.where(j < n_chunks, tok, -1)
    s = lines.start
    cb = lines.delay >= -1
    slots = np.column_stack(
        [
            np.full(n, V.L_BOS), V.LABEL_TOKEN[lines.label], V.POS_TOKEN[s.astype(np.int64)],
            V.COMBO_TOKEN[lines.combo], V.STATUS_TOKEN[lines.status], V.MAG_TOKEN[digits], chunk_slots,
            V.CUR_TOKEN[lines.currency], V.CTY_TOKEN[lines.country], V.MCC_TOKEN[lines.mcc],
            np.where(s, V.WDAY_TOKEN[np.maximum(lines.weekday, 0)], -1),
            np.where(s, V.HOUR_TOKEN[np.maximum(lines.hour, 0)], -1),
            np.where(s, V.MIN_TOKEN[np.maximum(lines.minute, 0)], -1),
            np.where(s, -1, V.GAP_TOKEN[np.maximum(lines.gap, 0)]),
            np.where(cb, V.DELAY_TOKEN[np.where(lines.delay >= 0, lines.delay, -1)], -1),
            np.full(n, V.L_EOS),
        ]
    )  # fmt: skip
    present = slots >= 0
    order = np.argsort(~present, axis=1, kind="stable")
    packed = np.take_along_axis(slots, order, axis=1)
    lengths = present.sum(axis=1)
    width = int(lengths.max()) if n else 0
    packed = packed[:, :width]
    packed[np.arange(width)[None, :] >= lengths[:, None]] = V.L_PAD
    return packed, lengths


def from_tokens(matrix: np.ndarray) -> LineFields:
    """Token matrix (starting at <bos> or at the label token) → fields. Assumes grammatical lines."""
    m = np.asarray(matrix, np.int64)
    n = m.shape[0]
    kind = V.KIND[m]
    value = V.VALUE[m]

    def first(k: int, default: int = -1) -> np.ndarray:
        hit = kind == k
        col = hit.argmax(axis=1)
        return np.where(hit.any(axis=1), value[np.arange(n), col], default)

    cents = np.zeros(n, np.int64)
    for j in range(m.shape[1]):
        is_chunk = kind[:, j] == V.K_CHUNK
        cents = np.where(is_chunk, cents * 100 + value[:, j], cents)
    start = first(V.K_POS, 1) == 1
    ttype_channel = first(V.K_COMBO, 0)
    has_delay = (kind == V.K_DELAY).any(axis=1)
    return LineFields(
        label=first(V.K_LABEL, 0),
        start=start,
        ttype=ttype_channel // N_CH,
        channel=ttype_channel % N_CH,
        status=first(V.K_STATUS, 0),
        cents=cents,
        currency=first(V.K_CUR, 0),
        country=first(V.K_CTY, 0),
        mcc=first(V.K_MCC, -1),
        weekday=np.where(start, first(V.K_WDAY, 0), -1),
        hour=np.where(start, first(V.K_HOUR, 0), -1),
        minute=np.where(start, first(V.K_MIN, 0), -1),
        gap=np.where(start, -1, first(V.K_GAP, 0)),
        delay=np.where(has_delay, first(V.K_DELAY, -1), -2),
    )


def to_text(matrix: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Human-readable lines (for inspection, docs and the text round trip); not used on hot paths."""
    names = np.array(V.TOKENS, dtype=object)
    return [" ".join(names[row[:k]]) for row, k in zip(matrix, lengths, strict=True)]


def from_text(lines: list[str]) -> LineFields:
    """Parse text lines back to fields; an unknown token raises naming the token and the line number."""
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append([V.INDEX[t] for t in line.split()])
        except KeyError as exc:
            raise ValueError(f"line {i}: unknown token {exc.args[0]!r}") from None
    width = max((len(r) for r in rows), default=0)
    matrix = np.full((len(rows), width), V.L_PAD, np.int64)
    for i, r in enumerate(rows):
        matrix[i, : len(r)] = r
    return from_tokens(matrix)
