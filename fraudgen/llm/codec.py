"""Row ⇄ compact text line: what the model learns, and what the codec fills in deterministically.

A line is ``<bos> @label POS T:type/channel status aD <amount chunks> CUR CC mMCC TIME [dDELAY] <eos>``:

* ``@label`` — the control prefix: ``@legit`` or one of the seven scenarios (the prompt at sampling time,
  so labels are correct by construction);
* ``POS`` — ``S`` starts a row sequence (every legit row, the first row of a fraud case), ``C`` continues
  the current fraud case;
* amount — exact cents: ``aD`` gives the digit count, then a 1- or 2-digit lead and 2-digit groups;
* TIME — for ``S`` rows weekday/hour/minute (``w3 h14 n5``); for ``C`` rows the log2 bucket of the gap to
  the previous row of the case (``g7``: 64–128 s), i.e. a relative reference;
* ``dN`` (chargebacks only) — the chargeback disputes a purchase made ``N`` whole days earlier; that
  purchase is *implied* by the line (same user, card, merchant, amount) and materialised by the decoder,
  which is how "chargebacks copy an earlier purchase" holds for generated data. ``d-``: no paired purchase.

What the model learns: label, case position, type, channel, status, amount, currency, country, MCC, time
of week (or gap) and dispute delay. What the codec fills deterministically (never modelled, never seen by
the model): every identifier (transaction/user/account/card/merchant/counterparty/device/case ids via the
world helpers and the id scramble), IPs, coordinates, the calendar date and sub-minute time, batch/tenant,
``source`` and the signature (``columnar.compute_signatures``). For the lossless round trip those values
travel in a *context* table beside the lines; at generation time :mod:`fraudgen.llm.fill` draws them.
Lines become the token matrices the model reads (and text) in :mod:`fraudgen.llm.tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.columnar import cents_to_decimal, compute_signatures, decimal_to_cents
from fraudgen.llm import vocab as V
from fraudgen.schema import (
    CHANNELS,
    COLUMNS,
    SCENARIOS,
    STATUSES,
    TRANSACTION_SCHEMA,
    TRANSACTION_TYPES,
    conform,
)
from fraudgen.world import COUNTRY_CODES, CURRENCY_CODES, MCC_CODES

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
CHARGEBACK = TRANSACTION_TYPES.index("chargeback")
PURCHASE = TRANSACTION_TYPES.index("purchase")
APPROVED = STATUSES.index("approved")
N_CH = len(CHANNELS)


@dataclass
class LineFields:
    """The modelled fields of a batch of lines, one numpy array per field (``-1`` = absent)."""

    label: np.ndarray  # index into vocab.LABELS
    start: np.ndarray  # bool: S (True) or C
    ttype: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    cents: np.ndarray
    currency: np.ndarray
    country: np.ndarray
    mcc: np.ndarray  # -1: no merchant
    weekday: np.ndarray  # S rows
    hour: np.ndarray
    minute: np.ndarray
    gap: np.ndarray  # C rows: gap bucket
    delay: np.ndarray  # chargebacks: whole days to the implied purchase, -1 for "d-"; -2 not a chargeback

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, idx: np.ndarray) -> LineFields:
        return LineFields(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[LineFields]) -> LineFields:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @property
    def combo(self) -> np.ndarray:
        return self.ttype.astype(np.int64) * N_CH + self.channel

    @property
    def rows(self) -> np.ndarray:
        """Rows each line stands for: 2 for a chargeback with an implied purchase, else 1."""
        return 1 + (self.delay >= 0).astype(np.int64)


def gap_bucket(gap_us: np.ndarray) -> np.ndarray:
    seconds = np.maximum(gap_us, 0) // 1_000_000
    bucket = np.where(seconds > 0, np.floor(np.log2(np.maximum(seconds, 1))).astype(np.int64) + 1, 0)
    return np.minimum(bucket, V.GAP_BUCKETS - 1)


def gap_bounds(bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of a gap bucket in µs (the open last bucket is given a one-doubling width)."""
    b = np.asarray(bucket, np.int64)
    lo = np.where(b == 0, 0, (2 ** np.maximum(b - 1, 0)) * 1_000_000)
    hi = (2**b) * 1_000_000
    return lo, hi


def _codes(column: pa.ChunkedArray | pa.Array, table: tuple[str, ...], name: str) -> np.ndarray:
    idx = pc.index_in(column, value_set=pa.array(table, pa.string()))
    out = np.asarray(idx.to_numpy(zero_copy_only=False))
    values = np.where(pd.isna(out), -1, out).astype(np.int64)
    valid = np.asarray(pc.is_valid(column))
    bad = valid & (values < 0)
    if bad.any():
        sample = pc.filter(column, pa.array(bad)).to_pylist()[:3]
        raise ValueError(f"codec: column {name!r} has values outside the contract: {sample}")
    return values


# --- table → lines + context ---------------------------------------------------------------------------


@dataclass
class Encoded:
    """Lines of a table plus the context the codec needs to rebuild it exactly."""

    lines: LineFields
    context: pa.Table  # one row per line; see encode_table


def _pair_chargebacks(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For every row: index of the purchase a chargeback disputes (or -1), and whether a row is implied."""
    n = len(df)
    partner = np.full(n, -1, np.int64)
    keys = ["user_id", "card_id", "merchant_id", "cents", "case_key"]
    cb = df[df.ttype == CHARGEBACK].reset_index().rename(columns={"index": "cb_row"})
    pu = df[(df.ttype == PURCHASE) & (df.status == APPROVED)].reset_index().rename(columns={"index": "p_row"})
    if cb.empty or pu.empty:
        return partner, np.zeros(n, bool)
    cb = cb.sort_values("ts", kind="stable")
    pu = pu.sort_values("ts", kind="stable")
    merged = pd.merge_asof(
        cb[[*keys, "ts", "cb_row"]], pu[[*keys, "ts", "p_row"]], on="ts", by=keys,
        direction="backward", allow_exact_matches=False,
    )  # fmt: skip
    merged = merged.dropna(subset=["p_row"])
    merged = merged[~merged.p_row.duplicated(keep="first")]
    cb_rows = merged.cb_row.to_numpy(np.int64)
    p_rows = merged.p_row.to_numpy(np.int64)
    same = np.ones(cb_rows.size, bool)
    for column in ("channel", "country", "currency", "mcc", "device_id", "ip_address", "lat", "lon", "label"):
        a, b = df[column].to_numpy()[cb_rows], df[column].to_numpy()[p_rows]
        same &= (a == b) | (pd.isna(a) & pd.isna(b))
    delay = (df.ts.to_numpy()[cb_rows] - df.ts.to_numpy()[p_rows]) // DAY_US
    same &= delay <= V.MAX_DELAY_DAYS
    partner[cb_rows[same]] = p_rows[same]
    implied = np.zeros(n, bool)
    implied[p_rows[same]] = True
    return partner, implied


def category_codes(table: pa.Table) -> dict[str, np.ndarray]:
    """The categorical fields the model writes, as integer codes (``label``: 0 legit, else scenario + 1);
    an unknown value fails naming its column. Shared by the codec and the quality checks."""
    return {
        "label": _codes(table.column("fraud_scenario"), SCENARIOS, "fraud_scenario") + 1,
        "ttype": _codes(table.column("transaction_type"), TRANSACTION_TYPES, "transaction_type"),
        "channel": _codes(table.column("channel"), CHANNELS, "channel"),
        "status": _codes(table.column("status"), STATUSES, "status"),
        "currency": _codes(table.column("currency"), CURRENCY_CODES, "currency"),
        "country": _codes(table.column("country"), COUNTRY_CODES, "country"),
        "mcc": _codes(table.column("merchant_category"), MCC_CODES, "merchant_category"),
    }


def encode_table(table: pa.Table) -> Encoded:
    """Split a contract table into model lines and deterministic context (vectorised, no per-row loop)."""
    table = conform(table)
    n = table.num_rows
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    df = pd.DataFrame(
        {
            "ts": ts,
            "cents": decimal_to_cents(table.column("amount")),
            **category_codes(table),
            "lat": table.column("latitude").to_numpy(),
            "lon": table.column("longitude").to_numpy(),
        }
    )
    for column in ("user_id", "card_id", "merchant_id", "device_id", "ip_address"):
        df[column] = table.column(column).to_pandas().fillna("")
    df["case_key"] = table.column("fraud_case_id").to_pandas().fillna("")
    if (df.cents <= 0).any() or (df.cents >= 10**V.MAX_AMOUNT_DIGITS).any():
        raise ValueError(f"codec: amount must be in (0, {10 ** (V.MAX_AMOUNT_DIGITS - 2)}) to be encoded")
    partner, implied = _pair_chargebacks(df)
    keep = np.flatnonzero(~implied)
    # order lines: fraud rows grouped by case in time order; legit rows stay where they are
    case_key = df.case_key.to_numpy()[keep]
    order_key = np.where(case_key == "", keep.astype(str), case_key)
    order = np.lexsort((ts[keep], keep, order_key)) if n else keep
    lines_idx = keep[order]
    ck = df.case_key.to_numpy()[lines_idx]
    fraud = ck != ""
    same_case = np.r_[False, (ck[1:] == ck[:-1]) & fraud[1:]]
    start = ~same_case
    prev = np.where(start, -1, np.arange(lines_idx.size) - 1)
    lts = ts[lines_idx]
    gap = np.where(start, 0, lts - np.r_[lts[:1], lts[:-1]])
    bucket = np.where(start, -1, gap_bucket(gap))
    lo, _ = gap_bounds(np.maximum(bucket, 0))
    p_row = partner[lines_idx]
    has_p = p_row >= 0
    p_ts = np.where(has_p, ts[np.maximum(p_row, 0)], 0)
    delay_full = lts - p_ts
    is_cb = df.ttype.to_numpy()[lines_idx] == CHARGEBACK
    delay = np.where(is_cb, np.where(has_p, delay_full // DAY_US, -1), -2)
    lines = LineFields(
        label=df.label.to_numpy()[lines_idx].astype(np.int64),
        start=start,
        ttype=df.ttype.to_numpy()[lines_idx],
        channel=df.channel.to_numpy()[lines_idx],
        status=df.status.to_numpy()[lines_idx],
        cents=df.cents.to_numpy()[lines_idx],
        currency=df.currency.to_numpy()[lines_idx],
        country=df.country.to_numpy()[lines_idx],
        mcc=df.mcc.to_numpy()[lines_idx],
        weekday=np.where(start, (lts // DAY_US + 3) % 7, -1),
        hour=np.where(start, (lts // HOUR_US) % 24, -1),
        minute=np.where(start, (lts // MINUTE_US) % 60, -1),
        gap=bucket,
        delay=delay,
    )
    rest = np.where(start, lts % MINUTE_US, gap - lo)
    context = table.take(pa.array(lines_idx)).select(
        [c for c in COLUMNS if c not in _MODELLED and c != "timestamp" and c != "signature"]
    )
    p_ids = table.column("transaction_id").take(pa.array(np.maximum(p_row, 0)))
    context = (
        context.append_column("row_index", pa.array(lines_idx, pa.int64()))
        .append_column("day", pa.array(np.where(start, lts // DAY_US, 0), pa.int64()))
        .append_column("rest_us", pa.array(rest, pa.int64()))
        .append_column("prev", pa.array(prev, pa.int64()))
        .append_column("p_row_index", pa.array(p_row, pa.int64()))
        .append_column("p_transaction_id", pc.if_else(pa.array(has_p), p_ids, pa.scalar(None, pa.string())))
        .append_column("p_rest_us", pa.array(np.where(has_p, delay_full % DAY_US, 0), pa.int64()))
    )
    return Encoded(lines, context)


#: Columns whose values come from the line (the rest, except timestamp and signature, are context).
_MODELLED = {
    "merchant_category", "amount", "currency", "transaction_type", "channel", "status", "country",
    "is_fraud", "fraud_scenario",
}  # fmt: skip


def decode_table(lines: LineFields, context: pa.Table) -> pa.Table:
    """Inverse of :func:`encode_table`: lines + context → the exact contract table, rows in original order."""
    n = len(lines)
    day = context.column("day").to_numpy()
    rest = context.column("rest_us").to_numpy()
    prev = context.column("prev").to_numpy()
    ts = np.where(lines.start, day * DAY_US + lines.hour * HOUR_US + lines.minute * MINUTE_US + rest, 0)
    lo, _ = gap_bounds(np.maximum(lines.gap, 0))
    pending = ~lines.start
    for _ in range(n + 1):  # resolve chains of continuation rows, one link per pass
        if not pending.any():
            break
        ready = pending & ~pending[np.maximum(prev, 0)]
        idx = np.flatnonzero(ready)
        ts[idx] = ts[prev[idx]] + lo[idx] + rest[idx]
        pending[idx] = False
    has_p = lines.delay >= 0
    p = np.flatnonzero(has_p)
    p_ts = ts[p] - lines.delay[p] * DAY_US - context.column("p_rest_us").to_numpy()[p]
    modelled = _modelled_columns(lines, ts)
    base = context.drop_columns(
        ["row_index", "day", "rest_us", "prev", "p_row_index", "p_transaction_id", "p_rest_us"]
    )
    line_table = _assemble(base, modelled)
    purchase = _modelled_columns(lines.take(p), p_ts)
    purchase["transaction_type"] = pa.array([TRANSACTION_TYPES[PURCHASE]] * p.size, pa.string())
    purchase["status"] = pa.array([STATUSES[APPROVED]] * p.size, pa.string())
    p_base = base.take(pa.array(p)).set_column(
        base.schema.get_field_index("transaction_id"),
        "transaction_id",
        context.column("p_transaction_id").take(pa.array(p)),
    )
    full = pa.concat_tables([line_table, _assemble(p_base, purchase)])
    position = np.r_[context.column("row_index").to_numpy(), context.column("p_row_index").to_numpy()[p]]
    return full.take(pa.array(np.argsort(position, kind="stable")))


def _modelled_columns(lines: LineFields, ts: np.ndarray) -> dict[str, pa.Array]:
    scenario = lines.label - 1
    return {
        "timestamp": pa.array(ts, pa.int64()).cast(TRANSACTION_SCHEMA.field("timestamp").type),
        "merchant_category": _strings(MCC_CODES, lines.mcc),
        "amount": cents_to_decimal(lines.cents),
        "currency": _strings(CURRENCY_CODES, lines.currency),
        "transaction_type": _strings(TRANSACTION_TYPES, lines.ttype),
        "channel": _strings(CHANNELS, lines.channel),
        "status": _strings(STATUSES, lines.status),
        "country": _strings(COUNTRY_CODES, lines.country),
        "is_fraud": pa.array(lines.label > 0, pa.bool_()),
        "fraud_scenario": _strings(SCENARIOS, scenario),
    }


def _strings(table: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    valid = codes >= 0
    indices = pa.array(np.maximum(codes, 0).astype(np.int32), pa.int32(), mask=~valid)
    return pa.DictionaryArray.from_arrays(indices, pa.array(table, pa.string())).cast(pa.string())


def _assemble(base: pa.Table, modelled: dict[str, pa.Array]) -> pa.Table:
    arrays = []
    for name in COLUMNS:
        if name == "signature":
            arrays.append(pa.array([""] * base.num_rows, pa.string()))
        elif name in modelled:
            arrays.append(modelled[name])
        else:
            arrays.append(base.column(name))
    table = pa.Table.from_arrays(arrays, schema=TRANSACTION_SCHEMA)
    return table.set_column(
        COLUMNS.index("signature"), TRANSACTION_SCHEMA.field("signature"), compute_signatures(table)
    )
