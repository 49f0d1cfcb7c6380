"""An integer-coded batch of transactions and its conversion to the Arrow contract.

Generators fill numpy arrays of codes and numbers (cheap to build, shuffle and sort); strings are made
once per shard at the very end, with fixed-width digit matrices instead of per-row formatting.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from fraudgen.columnar import (
    _field_view,
    _string_array,
    cents_text,
    cents_to_decimal,
    fixed_width_strings,
    format_ids,
    format_timestamps_us,
    masked_strings,
    sha256_hex,
    signature_messages,
)
from fraudgen.schema import CHANNELS, SCENARIOS, STATUSES, TRANSACTION_SCHEMA, TRANSACTION_TYPES
from fraudgen.world import COUNTRY_CODES, CURRENCY_CODES, ID_PREFIX, ID_WIDTH, MCC_CODES, scramble

TYPE = {name: i for i, name in enumerate(TRANSACTION_TYPES)}
CHANNEL = {name: i for i, name in enumerate(CHANNELS)}
STATUS = {name: i for i, name in enumerate(STATUSES)}
SCENARIO = {name: i for i, name in enumerate(SCENARIOS)}


@dataclass
class Frame:
    """Column arrays of equal length. ``-1`` means null for the integer id columns."""

    user: np.ndarray  # global user index
    card: np.ndarray  # card number or -1
    merchant: np.ndarray  # merchant index or -1
    mcc: np.ndarray  # index into MCC_CODES or -1 (set together with merchant)
    counterparty: np.ndarray  # counterparty account number or -1
    device: np.ndarray  # device number or -1
    ip: np.ndarray  # IPv4 as int or -1
    ts: np.ndarray  # µs since epoch, UTC
    cents: np.ndarray  # amount in cents, > 0
    currency: np.ndarray  # index into CURRENCY_CODES
    ttype: np.ndarray  # index into TRANSACTION_TYPES
    channel: np.ndarray  # index into CHANNELS
    status: np.ndarray  # index into STATUSES
    country: np.ndarray  # index into COUNTRY_CODES
    lat: np.ndarray
    lon: np.ndarray
    is_fraud: np.ndarray
    scenario: np.ndarray  # index into SCENARIOS or -1
    case: np.ndarray  # global fraud case number or -1

    @classmethod
    def empty(cls, n: int) -> Frame:
        """A frame of ``n`` legit-looking rows with every nullable column null, to be filled in."""
        minus = np.full(n, -1, dtype=np.int64)
        return cls(
            user=np.zeros(n, np.int64),
            card=minus.copy(),
            merchant=minus.copy(),
            mcc=np.full(n, -1, np.int16),
            counterparty=minus.copy(),
            device=minus.copy(),
            ip=minus.copy(),
            ts=np.zeros(n, np.int64),
            cents=np.zeros(n, np.int64),
            currency=np.zeros(n, np.int16),
            ttype=np.zeros(n, np.int8),
            channel=np.zeros(n, np.int8),
            status=np.zeros(n, np.int8),
            country=np.zeros(n, np.int16),
            lat=np.zeros(n),
            lon=np.zeros(n),
            is_fraud=np.zeros(n, np.bool_),
            scenario=np.full(n, -1, np.int8),
            case=minus.copy(),
        )

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def concat(cls, frames: list[Frame]) -> Frame:
        if not frames:
            return cls.empty(0)
        return cls(**{f.name: np.concatenate([getattr(fr, f.name) for fr in frames]) for f in fields(cls)})

    def take(self, order: np.ndarray) -> Frame:
        return Frame(**{f.name: getattr(self, f.name)[order] for f in fields(self)})


@dataclass(frozen=True)
class IdContext:
    """What turns numbers into the printed identifiers of one shard."""

    seed: int
    batch_id: str
    tenant_id: str
    source: str
    transaction_prefix: str  # e.g. ``t3f9a0c1b2d4e_00007_``; a row number is appended


def _ids(kind: str, numbers: np.ndarray, seed: int) -> pa.StringArray:
    valid = numbers >= 0
    if kind == "case":  # only fraud rows carry a case id, so there is nothing to hide: print it as is
        return format_ids(
            ID_PREFIX[kind], np.where(valid, numbers, 0), ID_WIDTH[kind], None if valid.all() else valid
        )
    if valid.all():
        return format_ids(ID_PREFIX[kind], scramble(numbers, kind, seed), ID_WIDTH[kind])
    scrambled = np.zeros(numbers.shape[0], dtype=np.int64)
    scrambled[valid] = scramble(numbers[valid], kind, seed)
    return format_ids(ID_PREFIX[kind], scrambled, ID_WIDTH[kind], valid)


def _codes(table: tuple[str, ...], codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Code → text. Tables of equal-length names (currencies, countries, MCCs, statuses) gather rows of a
    fixed-width byte matrix with np.take; others go through an Arrow dictionary cast."""
    widths = {len(name.encode()) for name in table}
    if len(widths) == 1:
        pool = np.array([list(name.encode()) for name in table], dtype=np.uint8)
        if valid is None or valid.all():
            return fixed_width_strings(np.take(pool, codes, axis=0))
        width = widths.pop()
        offsets = np.zeros(codes.shape[0] + 1, dtype=np.int32)
        np.cumsum(valid * np.int32(width), out=offsets[1:])
        return _string_array(offsets, np.take(pool, codes[valid], axis=0), valid)
    dictionary = pa.array(table, pa.string())
    indices = pa.array(codes.astype(np.int32), pa.int32(), mask=None if valid is None else ~valid)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def _constant(value: str, n: int) -> pa.Array:
    encoded = value.encode()
    offsets = np.arange(0, (n + 1) * len(encoded), len(encoded), dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))


#: Text of each octet value followed by a dot, left-aligned in 4 bytes (as one little-endian word), and
#: which of those bytes to keep (a word of 0/1 bytes) in the first three octets and in the last (no dot).
_OCTET = np.array([int.from_bytes(f"{i}.".ljust(4).encode(), "little") for i in range(256)], dtype=np.uint32)
_OCTET_KEEP = np.array([int.from_bytes(b"\1" * (len(str(i)) + 1) + b"\0" * (3 - len(str(i))), "little")
                        for i in range(256)], dtype=np.uint32)  # fmt: skip
_OCTET_KEEP_LAST = np.array([int.from_bytes(b"\1" * len(str(i)) + b"\0" * (4 - len(str(i))), "little")
                             for i in range(256)], dtype=np.uint32)  # fmt: skip
_OCTET_LEN = np.array([len(str(i)) + 1 for i in range(256)], dtype=np.int64)


def ip_text(ip: np.ndarray) -> pa.Array:
    """Dotted-quad text; ``-1`` becomes null. Only the valid rows are formatted (most rows have no IP)."""
    valid = ip >= 0
    all_valid = bool(valid.all())
    picked = (ip if all_valid else ip[valid]).astype(np.int64)
    m = picked.shape[0]
    out = np.empty((m, 16), dtype=np.uint8)
    keep = np.empty((m, 16), dtype=np.bool_)
    lengths = np.full(m, -1, dtype=np.int64)  # the last octet has no dot
    for k, shift in enumerate((24, 16, 8, 0)):
        octet = (picked >> shift) & 0xFF
        _field_view(out, 4 * k, "<u4")[:] = _OCTET[octet]
        _field_view(keep.view(np.uint8), 4 * k, "<u4")[:] = (_OCTET_KEEP if k < 3 else _OCTET_KEEP_LAST)[
            octet
        ]
        lengths += _OCTET_LEN[octet]
    text = masked_strings(out, keep, lengths)
    if all_valid:
        return text
    offsets = np.zeros(ip.shape[0] + 1, dtype=np.int32)
    full = np.zeros(ip.shape[0], dtype=np.int32)
    full[valid] = lengths
    np.cumsum(full, out=offsets[1:])
    return _string_array(offsets, np.frombuffer(text.buffers()[2] or b"", dtype=np.uint8), valid)


def frame_to_arrow(frame: Frame, ctx: IdContext, row_offset: int = 0) -> pa.Table:
    """Materialise a frame as a contract table (with signatures), row ids numbered from ``row_offset``."""
    n = len(frame)
    seed = ctx.seed
    rows = np.arange(row_offset, row_offset + n, dtype=np.int64)
    transaction_id = format_ids(ctx.transaction_prefix, rows, 9)
    user_id = _ids("user", frame.user, seed)
    account_id = _ids("account", frame.user, seed)
    merchant_valid = frame.merchant >= 0
    merchant_id = _ids("merchant", frame.merchant, seed)
    merchant_category = _codes(MCC_CODES, np.maximum(frame.mcc, 0), merchant_valid)
    currency = _codes(CURRENCY_CODES, frame.currency)
    ttype = _codes(TRANSACTION_TYPES, frame.ttype)
    amount_txt = cents_text(frame.cents)
    ts_txt = format_timestamps_us(frame.ts)
    signature = sha256_hex(signature_messages(user_id, amount_txt, currency, ts_txt, merchant_id, ttype))
    scenario_valid = frame.scenario >= 0
    columns = {
        "transaction_id": transaction_id,
        "batch_id": _constant(ctx.batch_id, n),
        "tenant_id": _constant(ctx.tenant_id, n),
        "timestamp": pa.array(frame.ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "user_id": user_id,
        "account_id": account_id,
        "card_id": _ids("card", frame.card, seed),
        "merchant_id": merchant_id,
        "merchant_category": merchant_category,
        "counterparty_id": _ids("account", frame.counterparty, seed),
        "amount": cents_to_decimal(frame.cents),
        "currency": currency,
        "transaction_type": ttype,
        "channel": _codes(CHANNELS, frame.channel),
        "status": _codes(STATUSES, frame.status),
        "device_id": _ids("device", frame.device, seed),
        "ip_address": ip_text(frame.ip),
        "country": _codes(COUNTRY_CODES, frame.country),
        "latitude": pa.array(np.round(frame.lat, 5)),
        "longitude": pa.array(np.round(frame.lon, 5)),
        "is_fraud": pa.array(frame.is_fraud, pa.bool_()),
        "fraud_scenario": _codes(SCENARIOS, np.maximum(frame.scenario, 0), scenario_valid),
        "fraud_case_id": _ids("case", frame.case, seed),
        "source": _constant(ctx.source, n),
        "signature": signature,
    }
    return pa.Table.from_arrays(
        [columns[name] for name in TRANSACTION_SCHEMA.names], schema=TRANSACTION_SCHEMA
    )
