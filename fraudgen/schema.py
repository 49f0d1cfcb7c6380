"""The transaction contract: one Arrow schema, one pydantic model, the enums and the scenario names.

Every producer (rule engine, LLM engine) and every consumer (validation, Parquet, Postgres, Kafka, the
HTTP API) goes through this module, so a column is named, typed and documented in exactly one place.
The column list and types are a public interface (see DESIGN.md): extend, never rename.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1"


class TransactionType(StrEnum):
    PURCHASE = "purchase"
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    TRANSFER = "transfer"
    CASH_WITHDRAWAL = "cash_withdrawal"
    DEPOSIT = "deposit"


class Channel(StrEnum):
    CARD_PRESENT = "card_present"
    ECOMMERCE = "ecommerce"
    ATM = "atm"
    MOBILE_APP = "mobile_app"
    ONLINE_BANKING = "online_banking"


class Status(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"


class Source(StrEnum):
    RULES = "rules"
    LLM = "llm"


class Scenario(StrEnum):
    """The seven fraud scenarios; the order is stable and used as an index by the generators."""

    CARD_TESTING = "card_testing"
    ACCOUNT_TAKEOVER = "account_takeover"
    IDENTITY_THEFT = "identity_theft"
    MERCHANT_FRAUD = "merchant_fraud"
    MONEY_LAUNDERING = "money_laundering"
    PHISHING = "phishing"
    CHARGEBACK_FRAUD = "chargeback_fraud"


SCENARIOS: tuple[str, ...] = tuple(s.value for s in Scenario)
TRANSACTION_TYPES: tuple[str, ...] = tuple(t.value for t in TransactionType)
CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

#: Channels on which a card token is present (card_id must be set); the other channels never carry one.
CARD_CHANNELS: frozenset[str] = frozenset({Channel.CARD_PRESENT, Channel.ECOMMERCE, Channel.ATM})
#: Transaction types that move money to another account (counterparty_id must be set).
COUNTERPARTY_TYPES: frozenset[str] = frozenset({TransactionType.TRANSFER})
#: Transaction types that happen at a merchant (merchant_id and merchant_category must be set).
MERCHANT_TYPES: frozenset[str] = frozenset(
    {TransactionType.PURCHASE, TransactionType.REFUND, TransactionType.CHARGEBACK}
)

AMOUNT_TYPE = pa.decimal128(18, 2)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

TRANSACTION_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=True),
        pa.field("merchant_id", pa.string(), nullable=True),
        pa.field("merchant_category", pa.string(), nullable=True),
        pa.field("counterparty_id", pa.string(), nullable=True),
        pa.field("amount", AMOUNT_TYPE, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("transaction_type", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=True),
        pa.field("ip_address", pa.string(), nullable=True),
        pa.field("country", pa.string(), nullable=False),
        pa.field("latitude", pa.float64(), nullable=False),
        pa.field("longitude", pa.float64(), nullable=False),
        pa.field("is_fraud", pa.bool_(), nullable=False),
        pa.field("fraud_scenario", pa.string(), nullable=True),
        pa.field("fraud_case_id", pa.string(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("signature", pa.string(), nullable=False),
    ],
    metadata={"fraudgen.schema_version": SCHEMA_VERSION},
)

COLUMNS: tuple[str, ...] = tuple(TRANSACTION_SCHEMA.names)


class Transaction(BaseModel):
    """One transaction as JSON/Python sees it; field-for-field the Arrow schema above."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    transaction_id: str = Field(min_length=1, max_length=128)
    batch_id: str = Field(min_length=1, max_length=128)
    tenant_id: str = Field(default="default", min_length=1, max_length=64)
    timestamp: datetime
    user_id: str = Field(min_length=1, max_length=64)
    account_id: str = Field(min_length=1, max_length=64)
    card_id: str | None = None
    merchant_id: str | None = None
    merchant_category: str | None = Field(default=None, pattern=r"^\d{4}$")
    counterparty_id: str | None = None
    amount: Decimal = Field(gt=0, max_digits=18, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    transaction_type: TransactionType
    channel: Channel
    status: Status
    device_id: str | None = None
    ip_address: str | None = None
    country: str = Field(pattern=r"^[A-Z]{2}$")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    is_fraud: bool
    fraud_scenario: Scenario | None = None
    fraud_case_id: str | None = None
    source: Source = Source.RULES
    signature: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    def expected_signature(self) -> str:
        """The seed's dedup key recomputed from this row's fields (see :func:`signature_message`)."""
        ts = self.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = "|".join(
            [
                self.user_id,
                f"{self.amount:.2f}",
                self.currency,
                ts,
                self.merchant_id or "",
                str(self.transaction_type),
            ]
        )
        return hashlib.sha256(message.encode("utf-8")).hexdigest()


def empty_table() -> pa.Table:
    return TRANSACTION_SCHEMA.empty_table()


def table_to_models(table: pa.Table) -> list[Transaction]:
    """Arrow → pydantic (validating every row). Meant for small tables: previews, API answers, tests."""
    return [Transaction.model_validate(row) for row in table.cast(TRANSACTION_SCHEMA).to_pylist()]


def models_to_table(rows: Iterable[Transaction]) -> pa.Table:
    """pydantic → Arrow with the exact contract types."""
    records = [row.model_dump() for row in rows]
    return pa.Table.from_pylist(records, schema=TRANSACTION_SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Reorder and cast a table to the contract, failing with the column name when it cannot."""
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks contract columns: {', '.join(missing)}")
    columns = []
    for field in TRANSACTION_SCHEMA:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"column {field.name!r} cannot be cast to {field.type}: {exc}") from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=TRANSACTION_SCHEMA)


# --- the seed's SHA256 dedup signature, vectorised -------------------------------------------------------

_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def format_timestamps_us(micros: np.ndarray) -> pa.StringArray:
    """Format UTC epoch microseconds as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` with numpy lookups, not strftime.

    Per-row strftime costs ~3 µs; this costs ~50 ns because only the distinct days go through
    ``datetime64`` formatting and the time of day is written digit by digit.
    """
    micros = np.asarray(micros, dtype=np.int64)
    n = micros.shape[0]
    if n == 0:
        return pa.array([], pa.string())
    day_us = 86_400_000_000
    days = np.floor_divide(micros, day_us)
    first = int(days.min())
    span = int(days.max()) - first + 1
    day_text = np.datetime_as_string(np.arange(first, first + span).astype("datetime64[D]"), unit="D")
    if any(len(t) != 10 for t in day_text):
        raise ValueError("timestamps must fall between years 0000 and 9999")
    day_bytes = np.frombuffer("".join(day_text.tolist()).encode("ascii"), np.uint8).reshape(span, 10)
    out = np.empty((n, 27), dtype=np.uint8)
    out[:, 0:10] = day_bytes[days - first]
    rest = micros - days * day_us
    seconds, frac = np.divmod(rest, 1_000_000)
    hours, rem = np.divmod(seconds, 3600)
    minutes, secs = np.divmod(rem, 60)
    out[:, 10] = ord("T")
    _write_digits(out, 11, hours, 2)
    out[:, 13] = ord(":")
    _write_digits(out, 14, minutes, 2)
    out[:, 16] = ord(":")
    _write_digits(out, 17, secs, 2)
    out[:, 19] = ord(".")
    _write_digits(out, 20, frac, 6)
    out[:, 26] = ord("Z")
    return fixed_width_strings(out)


def _write_digits(out: np.ndarray, start: int, values: np.ndarray, width: int) -> None:
    v = values.astype(np.int64, copy=True)
    for position in range(start + width - 1, start - 1, -1):
        v, digit = np.divmod(v, 10)
        out[:, position] = _DIGITS[digit]


def fixed_width_strings(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """Turn an (n, width) uint8 ASCII matrix into an Arrow string array without per-row Python work."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(matrix).tobytes()
    if valid is None:
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    bitmap = np.packbits(valid.astype(np.bool_), bitorder="little")
    null_count = int(n - np.count_nonzero(valid))
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), pa.py_buffer(bitmap), null_count
    )


def format_ids(prefix: str, numbers: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.StringArray:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array (nulls where ``valid`` is False)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head = prefix.encode("ascii")
    out = np.empty((numbers.shape[0], len(head) + width), dtype=np.uint8)
    if head:
        out[:, : len(head)] = np.frombuffer(head, np.uint8)
    safe = np.where(numbers < 0, 0, numbers) if valid is not None else numbers
    if safe.size and (safe.min() < 0 or safe.max() >= 10**width):
        raise ValueError(f"id numbers for prefix {prefix!r} do not fit {width} digits")
    _write_digits(out, len(head), safe, width)
    return fixed_width_strings(out, valid)


def amount_text(amount: pa.Array | pa.ChunkedArray) -> pa.Array:
    """decimal128(18,2) → text with exactly two decimals (``12.50``), as the signature requires."""
    return cents_text(decimal_to_cents(amount))


def decimal_to_cents(amount: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """decimal128(18,2) → int64 cents by reading the unscaled integers (exact, no float round trip)."""
    if isinstance(amount, pa.ChunkedArray):
        amount = amount.combine_chunks() if amount.num_chunks != 1 else amount.chunk(0)
    if not amount.type.equals(AMOUNT_TYPE):
        amount = amount.cast(AMOUNT_TYPE)
    words = np.frombuffer(amount.buffers()[1], dtype=np.int64)
    cents = words[2 * amount.offset : 2 * (amount.offset + len(amount)) : 2].copy()
    if amount.null_count:
        cents[~np.asarray(amount.is_valid())] = 0
    return cents


def cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """int64 cents → decimal128(18,2) by writing the unscaled 128-bit integers directly."""
    cents = np.asarray(cents, dtype=np.int64)
    words = np.empty(2 * cents.shape[0], dtype=np.int64)
    words[0::2] = cents
    words[1::2] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(AMOUNT_TYPE, cents.shape[0], [None, pa.py_buffer(words)])


def cents_text(cents: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array:
    """Integer cents → ``units.cc`` text; negative values keep their sign (validation must see them)."""
    cents_arr = pa.array(cents, pa.int64()) if isinstance(cents, np.ndarray) else cents
    negative = pc.less(cents_arr, 0)
    magnitude = pc.abs(cents_arr)
    units = pc.cast(pc.divide(magnitude, 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pc.subtract(magnitude, pc.multiply(pc.divide(magnitude, 100), 100)), pa.string()), 2, "0")
    text = pc.binary_join_element_wise(units, frac, ".")
    return pc.if_else(negative, pc.binary_join_element_wise("-", text, ""), text)


def signature_messages(
    user_id: Any, amount_txt: Any, currency: Any, timestamp_txt: Any, merchant_id: Any, transaction_type: Any
) -> pa.Array:
    """The UTF-8 messages hashed for the signature: ``user_id|amount|currency|timestamp|merchant_id|type``."""
    merchant = pc.fill_null(merchant_id, "")
    joined = pc.binary_join_element_wise(
        user_id, amount_txt, currency, timestamp_txt, merchant, transaction_type, "|"
    )
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return joined


def sha256_hex(messages: pa.Array) -> pa.StringArray:
    """Hex SHA256 of every string of an Arrow string array.

    hashlib has no batch API, so the one unavoidable Python loop of the generator lives here; it reads the
    Arrow buffers directly (no ``to_pylist``) and hex-encodes with numpy, ~1 µs per row.
    """
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    n = len(messages)
    if n == 0:
        return pa.array([], pa.string())
    if messages.type == pa.large_string():
        offsets = np.frombuffer(messages.buffers()[1], dtype=np.int64)[messages.offset : messages.offset + n + 1]
    else:
        offsets = np.frombuffer(messages.buffers()[1], dtype=np.int32)[messages.offset : messages.offset + n + 1]
    data = memoryview(messages.buffers()[2] or b"")
    sha = hashlib.sha256
    bounds = offsets.tolist()
    digests = b"".join([sha(data[a:b]).digest() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(n, 32)
    hexed = np.empty((n, 64), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    return fixed_width_strings(hexed)


def compute_signatures(table: pa.Table) -> pa.StringArray:
    """The seed's dedup signature for every row of a contract table (the value of its ``signature``)."""
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    messages = signature_messages(
        table.column("user_id"),
        amount_text(table.column("amount")),
        table.column("currency"),
        format_timestamps_us(ts),
        table.column("merchant_id"),
        table.column("transaction_type"),
    )
    return sha256_hex(messages)


def scenario_index(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}
