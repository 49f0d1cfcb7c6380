"""The transaction contract: one Arrow schema, one pydantic model, the enums and the scenario names.

Every producer (rule engine, LLM engine) and every consumer (validation, Parquet, Postgres, Kafka, the
HTTP API) goes through this module, so a column is named, typed and documented in exactly one place.
The column list and types are a public interface (see DESIGN.md): extend, never rename.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

import pyarrow as pa
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
            except pa.ArrowException as exc:
                raise ValueError(f"column {field.name!r} cannot be cast to {field.type}: {exc}") from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=TRANSACTION_SCHEMA)
