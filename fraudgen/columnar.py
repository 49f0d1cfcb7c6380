"""Vectorised text for contract columns: timestamps, amounts and ids formatted with numpy lookups, and the
seed's SHA256 dedup signature. No per-row Python except the one hashlib loop (hashlib has no batch API).

Split from :mod:`fraudgen.schema` (which holds the contract itself) so each module stays one idea.
"""

from __future__ import annotations

import hashlib
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.schema import AMOUNT_TYPE

# --- the seed's SHA256 dedup signature, vectorised -------------------------------------------------------

_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_PAIR = _HEX[np.arange(256) >> 4].astype(np.uint16) | (_HEX[np.arange(256) & 15].astype(np.uint16) << 8)
#: Hex text of every little-endian uint16 (its low byte first), as one uint32 word of 4 ASCII characters.
_HEX4 = _HEX_PAIR[np.arange(65_536) & 0xFF].astype(np.uint32) | (
    _HEX_PAIR[np.arange(65_536) >> 8].astype(np.uint32) << 16
)


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
    seconds = rest // 1_000_000
    frac = rest - seconds * 1_000_000
    hours = seconds // 3600
    rem = seconds - hours * 3600
    minutes = rem // 60
    out[:, 10] = ord("T")
    _write_digits(out, 11, hours, 2)
    out[:, 13] = ord(":")
    _write_digits(out, 14, minutes, 2)
    out[:, 16] = ord(":")
    _write_digits(out, 17, rem - minutes * 60, 2)
    out[:, 19] = ord(".")
    _write_digits(out, 20, frac, 6)
    out[:, 26] = ord("Z")
    return fixed_width_strings(out)


#: ASCII of 0000..9999 as little-endian uint32 words, and of 00..99 as uint16 words: writing 4 (or 2)
#: digits per table gather instead of one divmod per digit is what makes id formatting cheap.
_QUAD = np.array([int.from_bytes(f"{i:04d}".encode(), "little") for i in range(10_000)], dtype=np.uint32)
_PAIR = np.array([int.from_bytes(f"{i:02d}".encode(), "little") for i in range(100)], dtype=np.uint16)


def _field_view(out: np.ndarray, start: int, dtype: str) -> np.ndarray:
    """A (possibly unaligned) view of bytes ``out[:, start:start + itemsize]`` of every row as one word."""
    if not out.flags.c_contiguous:
        raise ValueError("digit matrix must be C-contiguous")
    width = out.shape[1]
    view_type = np.dtype({"names": ["w"], "formats": [dtype], "offsets": [start], "itemsize": width})
    return out.view(view_type)["w"][:, 0]


def _write_digits(out: np.ndarray, start: int, values: np.ndarray, width: int) -> None:
    """Write ``values`` (0 <= v < 10**width) as zero-padded decimal text into ``out[:, start:start+width]``.

    ``out`` must be a C-contiguous (n, row_width) uint8 matrix. Four digits are written per step from a
    lookup table (floor division by a constant is vectorised by numpy; ``divmod`` is not, and is 10x slower).
    """
    v = np.asarray(values, dtype=np.int64)
    end = start + width
    while end - start >= 4:
        q = v // 10_000
        _field_view(out, end - 4, "<u4")[:] = _QUAD[v - q * 10_000]
        v, end = q, end - 4
    if end - start >= 2:
        q = v // 100
        _field_view(out, end - 2, "<u2")[:] = _PAIR[v - q * 100]
        v, end = q, end - 2
    if end - start == 1:
        out[:, start] = _DIGITS[v - (v // 10) * 10]


def fixed_width_strings(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """Turn an (n, width) uint8 ASCII matrix into an Arrow string array without per-row Python work."""
    n, width = matrix.shape
    if n and n * width >= 2**31:
        raise ValueError("string column over 2 GiB: generate smaller shards")
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return _string_array(offsets, matrix, valid)


def masked_strings(
    matrix: np.ndarray, keep: np.ndarray, lengths: np.ndarray | None = None, valid: np.ndarray | None = None
) -> pa.StringArray:
    """Row ``i`` is the bytes of ``matrix[i]`` where ``keep[i]`` is True, in order: variable-length text
    (amounts, IPs) built as a padded matrix, then compacted in one boolean gather. ``lengths`` (the count
    of True per row) saves a pass when the caller knows it."""
    offsets = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(keep, axis=1) if lengths is None else lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("string column over 2 GiB: generate smaller shards")
    # np.compress on the flat arrays is ~3x faster than boolean indexing on random masks
    data = np.compress(keep.ravel(), np.ascontiguousarray(matrix).ravel())
    return _string_array(offsets.astype(np.int32), data, valid)


def _string_array(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None) -> pa.StringArray:
    n = offsets.shape[0] - 1
    buffers = [pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))]
    if valid is None:
        return pa.StringArray.from_buffers(n, *buffers)
    bitmap = np.packbits(valid.astype(np.bool_), bitorder="little")
    null_count = int(n - np.count_nonzero(valid))
    return pa.StringArray.from_buffers(n, buffers[0], buffers[1], pa.py_buffer(bitmap), null_count)


def format_ids(
    prefix: str, numbers: np.ndarray, width: int, valid: np.ndarray | None = None
) -> pa.StringArray:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array (nulls where ``valid`` is False).

    Only the valid rows are formatted (most nullable id columns are mostly null); null rows get an empty
    slot in the offsets.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    if valid is not None and not valid.all():
        valid = np.asarray(valid, dtype=np.bool_)
        picked = numbers[valid]
    else:
        valid, picked = None, numbers
    head = prefix.encode("ascii")
    row_width = len(head) + width
    out = np.empty((picked.shape[0], row_width), dtype=np.uint8)
    if head:
        out[:, : len(head)] = np.frombuffer(head, np.uint8)
    if picked.size and (picked.min() < 0 or picked.max() >= 10**width):
        raise ValueError(f"id numbers for prefix {prefix!r} do not fit {width} digits")
    _write_digits(out, len(head), picked, width)
    if valid is None:
        return fixed_width_strings(out)
    offsets = np.zeros(numbers.shape[0] + 1, dtype=np.int32)
    np.cumsum(valid * np.int32(row_width), out=offsets[1:])
    return _string_array(offsets, out, valid)


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
    """Integer cents → ``units.cc`` text; negative values keep their sign (validation must see them).

    Built as a right-aligned digit matrix and compacted (no per-row formatting); nulls stay null.
    """
    valid: np.ndarray | None = None
    if isinstance(cents, np.ndarray):
        values = cents.astype(np.int64, copy=False)
    else:
        arr = cents.combine_chunks() if isinstance(cents, pa.ChunkedArray) else cents
        arr = arr.cast(pa.int64())
        if arr.null_count:
            valid = np.asarray(arr.is_valid())
        values = arr.fill_null(0).to_numpy(zero_copy_only=False)
    n = values.shape[0]
    negative = values < 0
    magnitude = np.abs(values)
    units = magnitude // 100
    width = 1 + max(1, len(str(int(units.max())))) if n else 2  # sign + unit digits
    out = np.empty((n, width + 3), dtype=np.uint8)
    _write_digits(out, 1, units, width - 1)
    out[:, width] = ord(".")
    _write_digits(out, width + 1, magnitude - units * 100, 2)
    digits = np.ones(n, dtype=np.int64)
    for power in range(1, width - 1):
        digits += units >= 10**power
    first = width - digits  # position of the leading unit digit
    out[:, 0] = ord("-")
    keep = np.arange(width + 3) >= first[:, None]
    keep[:, 0] = negative
    return masked_strings(out, keep, digits + 3 + negative, valid)


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
    offsets: np.ndarray
    if messages.type == pa.large_string():
        offsets = np.frombuffer(messages.buffers()[1], dtype=np.int64)[
            messages.offset : messages.offset + n + 1
        ]
    else:
        offsets = np.frombuffer(messages.buffers()[1], dtype=np.int32)[
            messages.offset : messages.offset + n + 1
        ]
    data = memoryview(messages.buffers()[2] or b"")
    sha = hashlib.sha256
    bounds = offsets.tolist()
    digests = b"".join([sha(data[a:b]).digest() for a, b in pairwise(bounds)])
    # two digest bytes → four hex characters per table lookup (np.take is faster than fancy indexing)
    hexed = np.take(_HEX4, np.frombuffer(digests, dtype=np.uint16)).view(np.uint8).reshape(n, 64)
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
