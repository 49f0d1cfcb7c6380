"""Schema checks of one block: columns and types, nulls, enums, ISO codes, amounts, window, signatures.

The checks accept any input table (a column may be missing, float instead of decimal, decimal with three
places, strings instead of enums…): a wrong type is itself reported, then the column is coerced when that
is possible so the value checks still run. The result is a :class:`Columns` of numpy working arrays that
the rule and statistics passes reuse, so every string column is decoded once per block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.columnar import compute_signatures
from fraudgen.schema import CHANNELS, SCENARIOS, STATUSES, TRANSACTION_SCHEMA, TRANSACTION_TYPES, conform
from fraudgen.validate.hashing import as_array, signature_prefixes
from fraudgen.validate.iso import ISO_3166_ALPHA2, ISO_4217
from fraudgen.validate.summary import BlockSummary

SOURCES = ("rules", "llm")
_UTC_NAMES = {"UTC", "Etc/UTC", "+00:00", "Z", "utc"}
#: rows per block whose signature is recomputed (SHA256 costs ~1 µs/row; the full column is only parsed)
SIGNATURE_SAMPLE = 2_000


@dataclass
class Columns:
    """Decoded working arrays of one block (None where the column is missing or unusable)."""

    n: int
    ids: pa.Array
    ts: np.ndarray | None
    cents: np.ndarray | None  # int64 cents (rounded when the input had more decimals)
    amount: np.ndarray | None  # float64 units
    ttype: np.ndarray  # int16 code into TRANSACTION_TYPES, -1 unknown, -2 null
    channel: np.ndarray
    status: np.ndarray
    scenario: np.ndarray  # -1 legit (null), -2 unknown name, else index into SCENARIOS
    is_fraud: np.ndarray | None
    currency: np.ndarray  # int16 code into the block's currency list
    country: np.ndarray
    lat: np.ndarray | None
    lon: np.ndarray | None
    signature_keys: np.ndarray
    table: pa.Table

    def string(self, name: str) -> pa.Array | None:
        if name not in self.table.column_names:
            return None
        return as_array(self.table.column(name))

    def valid(self, name: str) -> np.ndarray:
        """Bool mask of non-null values (all False when the column is missing)."""
        column = self.string(name)
        if column is None:
            return np.zeros(self.n, dtype=bool)
        if column.null_count == 0:
            return np.ones(self.n, dtype=bool)
        return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def examples(cols: Columns, mask: np.ndarray, limit: int = 5) -> list[str]:
    """Transaction ids of the first offending rows (row numbers when ids are unusable)."""
    rows = np.flatnonzero(mask)[:limit]
    if rows.size == 0:
        return []
    try:
        return [str(v) for v in cols.ids.take(pa.array(rows)).to_pylist()]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return [f"row {int(r)}" for r in rows]


def encode(
    column: pa.Array | pa.ChunkedArray | None, known: Sequence[str], n: int
) -> tuple[np.ndarray, dict[str | None, int]]:
    """Codes into ``known`` (-1 unknown, -2 null) and the value counts, decoding each distinct value once."""
    if column is None:
        return np.full(n, -2, dtype=np.int16), {}
    arr = as_array(column)
    if not pa.types.is_dictionary(arr.type):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pc.cast(arr, pa.string(), safe=False)
        arr = pc.dictionary_encode(arr)
    values = [None if v is None else str(v) for v in arr.dictionary.to_pylist()]
    index = {name: i for i, name in enumerate(known)}
    lut = np.array([index.get(v, -1) if v is not None else -2 for v in values] + [-2], dtype=np.int16)
    indices = arr.indices
    raw = indices.to_numpy(zero_copy_only=False) if indices.null_count == 0 else None
    if raw is None:
        raw = np.asarray(pc.fill_null(indices, len(values)).to_numpy(zero_copy_only=False))
    raw = raw.astype(np.int64, copy=False)
    counts = np.bincount(raw, minlength=len(values) + 1)
    value_counts: dict[str | None, int] = {}
    for i, v in enumerate([*values, None]):
        if counts[i]:
            value_counts[v] = value_counts.get(v, 0) + int(counts[i])
    return lut[raw], value_counts


def _type_ok(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual.equals(expected):
        return True
    if pa.types.is_string(expected):
        value = actual.value_type if pa.types.is_dictionary(actual) else actual
        return pa.types.is_string(value) or pa.types.is_large_string(value)
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual):
        return actual.unit == "us" and actual.tz in _UTC_NAMES
    return False


def check_columns(table: pa.Table, summary: BlockSummary) -> None:
    """Missing columns and wrong types are reported once per column (not per row)."""
    for field in TRANSACTION_SCHEMA:
        if field.name not in table.column_names:
            summary.column_errors.setdefault(field.name, f"column {field.name!r} is missing")
            continue
        actual = table.schema.field(field.name).type
        if not _type_ok(actual, field.type):
            summary.column_errors.setdefault(
                field.name, f"column {field.name!r} has type {actual}, expected {field.type}"
            )
    extra = sorted(set(table.column_names) - set(TRANSACTION_SCHEMA.names))
    if extra:
        summary.column_errors.setdefault("<extra>", f"unexpected column(s): {', '.join(extra)}")


def _timestamps(table: pa.Table) -> np.ndarray | None:
    if "timestamp" not in table.column_names:
        return None
    col = as_array(table.column("timestamp"))
    try:
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz=col.type.tz))
            if col.null_count == 0:  # zero-copy view of the int64 microseconds
                return np.frombuffer(col.buffers()[1], dtype=np.int64)[col.offset : col.offset + len(col)]
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC"))
        elif pa.types.is_integer(col.type):
            col = col.cast(pa.int64())
        else:
            return None
        return np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    except pa.ArrowException:
        return None


def _amounts(table: pa.Table) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(cents, units as float, rows with more than two decimals) from decimal, float, int or text amounts."""
    if "amount" not in table.column_names:
        return None, None, None
    col = as_array(table.column("amount"))
    n = len(col)
    t = col.type
    try:
        if pa.types.is_decimal128(t) and t.precision <= 18:
            words = np.frombuffer(col.buffers()[1], dtype=np.int64)[2 * col.offset : 2 * (col.offset + n)]
            unscaled = words[0::2].copy()
            if col.null_count:
                unscaled[~np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
            if t.scale >= 2:
                step = 10 ** (t.scale - 2)
                cents, rest = np.divmod(unscaled, step)
                fine = rest != 0
                cents = cents + (2 * rest >= step)
            else:
                cents = unscaled * 10 ** (2 - t.scale)
                fine = np.zeros(n, dtype=bool)
            return cents, unscaled / float(10**t.scale), fine
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_decimal(t):
            col = col.cast(pa.float64())
        units = np.asarray(pc.cast(col, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False))
    except pa.ArrowException:
        return None, None, None
    scaled = units * 100.0
    cents = np.round(scaled)
    fine = np.abs(scaled - cents) > 1e-6 * np.maximum(1.0, np.abs(scaled))
    return cents.astype(np.int64), units, fine


def _floats(table: pa.Table, name: str) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    try:
        return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(), dtype=np.float64)
    except pa.ArrowException:
        return None


def _code_check(
    summary: BlockSummary,
    name: str,
    column: pa.Array | pa.ChunkedArray | None,
    known: Sequence[str],
    n: int,
    accept: Callable[[str], bool] | None = None,
    nullable: bool = False,
) -> tuple[np.ndarray, dict[str | None, int], list[str]]:
    codes, counts = encode(column, known, n)
    bad_values = [
        v for v in counts if v is not None and (v not in known if accept is None else not accept(v))
    ]
    if column is not None and bad_values:
        summary.check(f"schema.{name}").add(sum(counts[v] for v in bad_values), [repr(v) for v in bad_values])
    if column is not None and not nullable and None in counts:
        summary.check(f"schema.null.{name}").add(counts[None])
    return codes, counts, bad_values


def check_block(table: pa.Table, window: tuple[int, int] | None, summary: BlockSummary) -> Columns:
    """Run the schema checks of one block into ``summary`` and return the decoded columns."""
    n = table.num_rows
    check_columns(table, summary)
    col = table.column
    has = set(table.column_names)
    ids = as_array(col("transaction_id")) if "transaction_id" in has else pa.array(np.arange(n))
    for field in TRANSACTION_SCHEMA:
        if (
            not field.nullable
            and field.name in has
            and field.name not in ("transaction_type", "channel", "status")
        ):
            nulls = col(field.name).null_count
            if nulls:
                summary.check(f"schema.null.{field.name}").add(nulls)
    ttype, counts_type, _ = _code_check(
        summary,
        "transaction_type",
        col("transaction_type") if "transaction_type" in has else None,
        TRANSACTION_TYPES,
        n,
    )
    channel, counts_channel, _ = _code_check(
        summary, "channel", col("channel") if "channel" in has else None, CHANNELS, n
    )
    status, counts_status, _ = _code_check(
        summary, "status", col("status") if "status" in has else None, STATUSES, n
    )
    _code_check(summary, "source", col("source") if "source" in has else None, SOURCES, n)
    scenario, counts_scenario, _ = _code_check(
        summary,
        "fraud_scenario",
        col("fraud_scenario") if "fraud_scenario" in has else None,
        SCENARIOS,
        n,
        nullable=True,
    )
    scenario = np.where(scenario == -2, -1, np.where(scenario == -1, -2, scenario)).astype(np.int16)
    currencies = sorted(ISO_4217)
    currency, counts_currency, _ = _code_check(
        summary, "currency", col("currency") if "currency" in has else None, currencies, n
    )
    countries = sorted(ISO_3166_ALPHA2)
    country, counts_country, _ = _code_check(
        summary, "country", col("country") if "country" in has else None, countries, n
    )
    _code_check(
        summary,
        "merchant_category",
        col("merchant_category") if "merchant_category" in has else None,
        (),
        n,
        accept=lambda v: len(v) == 4 and v.isascii() and v.isdigit(),
        nullable=True,
    )
    for name, counts in (
        ("transaction_type", counts_type),
        ("channel", counts_channel),
        ("status", counts_status),
        ("fraud_scenario", counts_scenario),
        ("currency", counts_currency),
        ("country", counts_country),
    ):
        summary.counts.setdefault(name, {})
        for value, k in counts.items():
            key = "<null>" if value is None else value
            summary.counts[name][key] = summary.counts[name].get(key, 0) + k
    ts = _timestamps(table)
    cols = Columns(
        n=n,
        ids=ids,
        ts=ts,
        cents=None,
        amount=None,
        ttype=ttype,
        channel=channel,
        status=status,
        scenario=scenario,
        is_fraud=None,
        currency=currency,
        country=country,
        lat=_floats(table, "latitude"),
        lon=_floats(table, "longitude"),
        signature_keys=np.zeros(0, np.uint64),
        table=table,
    )
    if "timestamp" in has and ts is None:
        summary.check("schema.timestamp_unreadable").add(n, examples(cols, np.ones(n, bool)))
    if ts is not None and n:
        summary.ts_min = int(ts.min()) if summary.ts_min is None else min(summary.ts_min, int(ts.min()))
        summary.ts_max = int(ts.max()) if summary.ts_max is None else max(summary.ts_max, int(ts.max()))
        if window is not None:
            outside = (ts < window[0]) | (ts >= window[1])
            if outside.any():
                summary.check("schema.timestamp_window").add(int(outside.sum()), examples(cols, outside))
    cents, units, fine = _amounts(table)
    cols.cents, cols.amount = cents, units
    if "amount" in has and cents is None:
        summary.check("schema.amount_unreadable").add(n, examples(cols, np.ones(n, bool)))
    if cents is not None and units is not None and fine is not None:
        bad = units <= 0
        if bad.any():
            summary.check("schema.amount_not_positive").add(int(bad.sum()), examples(cols, bad))
        if fine.any():
            summary.check("schema.amount_precision").add(int(fine.sum()), examples(cols, fine))
        big = np.abs(units) >= 1e16
        if big.any():
            summary.check("schema.amount_range").add(int(big.sum()), examples(cols, big))
    if cols.lat is not None and cols.lon is not None:
        bad = ~((np.abs(cols.lat) <= 90) & (np.abs(cols.lon) <= 180))
        if bad.any():
            summary.check("schema.lat_lon_range").add(int(bad.sum()), examples(cols, bad))
    _labels(cols, summary)
    _signatures(cols, summary)
    return cols


def _labels(cols: Columns, summary: BlockSummary) -> None:
    """is_fraud ⇔ fraud_scenario set; fraud_case_id only on fraud rows."""
    table = cols.table
    if "is_fraud" not in table.column_names:
        return
    try:
        fraud = np.asarray(
            pc.cast(table.column("is_fraud"), pa.bool_()).fill_null(False).to_numpy(), dtype=bool
        )
    except pa.ArrowException:
        return
    cols.is_fraud = fraud
    bad = fraud != (cols.scenario != -1)
    if "fraud_case_id" in table.column_names:
        bad |= ~fraud & cols.valid("fraud_case_id")
        bad |= fraud & ~cols.valid("fraud_case_id")
    if bad.any():
        summary.check("schema.fraud_label").add(int(bad.sum()), examples(cols, bad))


def _signatures(cols: Columns, summary: BlockSummary) -> None:
    """Parse every signature (format + dedup key); recompute SHA256 on a bounded, evenly spaced sample."""
    table = cols.table
    if "signature" not in table.column_names or cols.n == 0:
        return
    keys, well_formed = signature_prefixes(table.column("signature"))
    cols.signature_keys = keys
    if not well_formed.all():
        bad = ~well_formed
        summary.check("schema.signature_format").add(int(bad.sum()), examples(cols, bad))
    if summary.column_errors.keys() & {
        "user_id",
        "amount",
        "currency",
        "timestamp",
        "merchant_id",
        "transaction_type",
    }:
        return
    step = max(1, cols.n // SIGNATURE_SAMPLE)
    rows = np.arange(0, cols.n, step)[:SIGNATURE_SAMPLE]
    sample = table.take(pa.array(rows))
    try:
        expected = compute_signatures(conform(sample))
    except (ValueError, pa.ArrowInvalid):
        return
    mismatch = ~np.asarray(
        pc.equal(expected, pc.cast(sample.column("signature"), pa.string()))
        .fill_null(False)
        .to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    summary.signature_checked += int(rows.size)
    summary.signature_mismatch += int(mismatch.sum())
    if mismatch.any():
        summary.check("schema.signature_mismatch").add(
            int(mismatch.sum()), examples(cols, np.isin(np.arange(cols.n), rows[mismatch]))
        )
