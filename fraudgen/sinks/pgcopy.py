"""Postgres binary COPY encoding of contract tables, vectorised with numpy/Arrow (no per-row Python).

Two row layouts share the same building blocks:

* **target**: straight into ``synthetic_transactions`` — ``amount`` as a binary ``numeric`` and
  ``ip_address`` as a binary ``inet``, so the server does no text parsing and COPY's batched heap inserts
  are used. This is the bulk-load fast path (see :func:`fraudgen.sinks.postgres.load_parquet_file`).
* **stage**: into the session's TEMP staging table (amount as integer cents, ip as text), from which a
  resumed load moves rows with ``INSERT … ON CONFLICT DO NOTHING``.

A binary COPY tuple is: int16 field count, then per field an int32 byte length (-1 for NULL) and the bytes.
Every fixed-width field is written as one column of a ``(rows, bytes)`` matrix; variable-width fields as an
Arrow binary array of length words plus one of values; ``binary_join_element_wise`` then concatenates the
pieces of each row in C.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.columnar import decimal_to_cents
from fraudgen.schema import TRANSACTION_SCHEMA

#: microseconds between the Unix epoch and Postgres' epoch (2000-01-01 UTC)
PG_EPOCH_US = 946_684_800_000_000
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: every string column of the contract, in schema order
TEXT_COLUMNS = tuple(f.name for f in TRANSACTION_SCHEMA if pa.types.is_string(f.type))
#: fixed-width fields first (one matrix), then the text fields
STAGE_COLUMNS = ("timestamp", "amount_cents", "latitude", "longitude", "is_fraud", *TEXT_COLUMNS)
TARGET_COLUMNS = (
    "timestamp",
    "amount",
    "latitude",
    "longitude",
    "is_fraud",
    "ip_address",
    *(c for c in TEXT_COLUMNS if c != "ip_address"),
)
#: numeric(18,2) as base-10000 digit groups: 4 integer groups (weight 3) + 1 fractional group
_NUMERIC_GROUPS = 5
_NUMERIC_BYTES = 8 + 2 * _NUMERIC_GROUPS
_NUMERIC_NEG = 0x4000
#: Postgres' inet wire families (PGSQL_AF_INET = AF_INET + 0, PGSQL_AF_INET6 = AF_INET + 1; AF_INET = 2)
_INET4, _INET6 = 2, 3


def copy_statement(table: str, columns: tuple[str, ...]) -> str:
    """``COPY table (columns…) FROM STDIN (FORMAT BINARY)`` for one of the row layouts above."""
    return f"COPY {table} (" + ", ".join(f'"{c}"' for c in columns) + ") FROM STDIN (FORMAT BINARY)"


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    """Values as big-endian bytes, one row per value."""
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(values.shape[0], -1)


def _word(value: int, dtype: str) -> np.ndarray:
    return np.frombuffer(np.array([value], dtype).tobytes(), np.uint8)


def _binary_from_matrix(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix).tobytes())]
    )


def _text_parts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """(4-byte big-endian length or -1 for NULL, the bytes) of one text column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    if column.null_count:
        valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
        lengths = np.where(valid, lengths, -1)
        column = pc.fill_null(column, "")
    return _binary_from_matrix(_be(np.asarray(lengths), ">i4")), column.cast(pa.binary())


def numeric_fields(cents: np.ndarray) -> np.ndarray:
    """Length word + binary ``numeric`` of ``cents / 100`` per row: a ``(rows, 22)`` matrix.

    Always five digit groups with weight 3 and dscale 2; the server strips the leading and trailing zero
    groups itself (numeric_recv → make_result), so no per-row normalisation is needed here. numeric(18,2)
    holds |value| < 10^16, i.e. at most four integer groups.
    """
    cents = np.asarray(cents, dtype=np.int64)
    if cents.size and int(np.abs(cents).max()) >= 10**18:
        raise ValueError("postgres sink: amount exceeds numeric(18,2)")
    magnitude = np.abs(cents)
    units, hundredths = np.divmod(magnitude, 100)
    groups = np.empty((cents.shape[0], _NUMERIC_GROUPS), dtype=np.int64)
    for i, scale in enumerate((10**12, 10**8, 10**4, 1)):
        groups[:, i] = (units // scale) % 10_000
    groups[:, 4] = hundredths * 100
    out = np.empty((cents.shape[0], 4 + _NUMERIC_BYTES), dtype=np.uint8)
    out[:, 0:4] = _word(_NUMERIC_BYTES, ">i4")
    out[:, 4:6] = _word(_NUMERIC_GROUPS, ">i2")
    out[:, 6:8] = _word(3, ">i2")
    out[:, 8:10] = _be(np.where(cents < 0, _NUMERIC_NEG, 0), ">u2")
    out[:, 10:12] = _word(2, ">i2")
    out[:, 12:] = _be(groups.reshape(-1), ">i2").reshape(cents.shape[0], -1)
    return out


def _ipv4_octets(text: pa.Array) -> np.ndarray | None:
    """``(rows, 4)`` octets when every value is a dotted quad of 0–255, else None (caller falls back)."""
    parts = pc.split_pattern(text, ".")
    if not pc.all(pc.equal(pc.list_value_length(parts), 4)).as_py():
        return None
    flat = pc.list_flatten(parts)
    if not pc.all(pc.match_substring_regex(flat, r"^[0-9]{1,3}$")).as_py():
        return None
    octets = pc.cast(flat, pa.int64()).to_numpy()
    if (octets > 255).any():
        return None
    return octets.astype(np.uint8).reshape(-1, 4)


def _inet_payload(address: str) -> bytes:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"postgres sink: ip_address {address!r} is not an IPv4/IPv6 address") from None
    family, bits = (_INET4, 32) if ip.version == 4 else (_INET6, 128)
    return bytes((family, bits, 0, len(ip.packed))) + ip.packed


def inet_parts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """(length word, binary ``inet``) of the ip_address column; NULL stays NULL.

    Dotted quads (everything the generators emit) are encoded column-wise; any other value (IPv6) goes
    through :mod:`ipaddress`, so a bad address fails here naming the field instead of inside the COPY.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
    rows = np.flatnonzero(valid)
    present = column.filter(pa.array(valid)) if column.null_count else column
    octets = _ipv4_octets(present) if len(present) else np.empty((0, 4), np.uint8)
    if octets is not None:
        widths = np.where(valid, 8, 0)
        payload = np.empty((rows.shape[0], 8), dtype=np.uint8)
        payload[:, 0:4] = np.array([_INET4, 32, 0, 4], dtype=np.uint8)
        payload[:, 4:] = octets
        data = payload.tobytes()
    else:
        encoded = [_inet_payload(str(a)) for a in present.to_pylist()]
        widths = np.zeros(n, dtype=np.int64)
        widths[rows] = [len(e) for e in encoded]
        data = b"".join(encoded)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(widths, out=offsets[1:])
    values = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    lengths = np.where(valid, widths, -1)
    return _binary_from_matrix(_be(lengths, ">i4")), values


def _float_and_flag_fields(table: pa.Table, out: np.ndarray, start: int) -> None:
    """latitude, longitude (float8) and is_fraud (bool) with their length words, from column ``start``."""
    eight = _word(8, ">i4")
    for i, name in enumerate(("latitude", "longitude")):
        at = start + 12 * i
        out[:, at : at + 4] = eight
        out[:, at + 4 : at + 12] = _be(table.column(name).to_numpy(), ">f8")
    out[:, start + 24 : start + 28] = _word(1, ">i4")
    out[:, start + 28] = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(np.uint8)


def _timestamps(table: pa.Table) -> np.ndarray:
    return pc.cast(table.column("timestamp"), pa.int64()).to_numpy() - PG_EPOCH_US


def _join(parts: list[pa.Array]) -> pa.Buffer:
    rows = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
    lo, hi = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    data = rows.buffers()[2]
    assert data is not None
    return data.slice(lo, hi - lo)


def encode_stage_rows(table: pa.Table) -> pa.Buffer:
    """Tuples (no header/trailer) for the staging table, columns :data:`STAGE_COLUMNS`."""
    n = table.num_rows
    fixed = np.empty((n, 2 + 24 + 29), dtype=np.uint8)
    fixed[:, 0:2] = _word(len(STAGE_COLUMNS), ">i2")
    fixed[:, 2:6] = _word(8, ">i4")
    fixed[:, 6:14] = _be(_timestamps(table), ">i8")
    fixed[:, 14:18] = _word(8, ">i4")
    fixed[:, 18:26] = _be(decimal_to_cents(table.column("amount")), ">i8")
    _float_and_flag_fields(table, fixed, 26)
    parts: list[pa.Array] = [_binary_from_matrix(fixed)]
    for name in TEXT_COLUMNS:
        parts.extend(_text_parts(table.column(name)))
    return _join(parts)


def encode_target_rows(table: pa.Table) -> pa.Buffer:
    """Tuples (no header/trailer) for ``synthetic_transactions`` itself, columns :data:`TARGET_COLUMNS`."""
    n = table.num_rows
    fixed = np.empty((n, 2 + 12 + 4 + _NUMERIC_BYTES + 29), dtype=np.uint8)
    fixed[:, 0:2] = _word(len(TARGET_COLUMNS), ">i2")
    fixed[:, 2:6] = _word(8, ">i4")
    fixed[:, 6:14] = _be(_timestamps(table), ">i8")
    numeric_end = 14 + 4 + _NUMERIC_BYTES
    fixed[:, 14:numeric_end] = numeric_fields(decimal_to_cents(table.column("amount")))
    _float_and_flag_fields(table, fixed, numeric_end)
    parts: list[pa.Array] = [_binary_from_matrix(fixed), *inet_parts(table.column("ip_address"))]
    for name in TARGET_COLUMNS[6:]:
        parts.extend(_text_parts(table.column(name)))
    return _join(parts)
