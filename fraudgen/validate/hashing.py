"""Vectorised 64-bit hashes of Arrow string columns and of the signature column.

The checks that span blocks (dedup, chargeback → purchase, device history) compare keys built from
several string columns. Hashing every row with hashlib costs ~1 µs; these hashes read the Arrow buffers as
a byte matrix and mix 8-byte words with splitmix64, ~10-40 ns per row, and are content-based (the same
string gives the same hash in every block, process and machine).
"""

from __future__ import annotations

import binascii
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudgen.world import mix64

NULL_HASH = np.uint64(0x6A09E667F3BCC908)
_LONG = 128  # strings longer than this go through hashlib (rare: never produced by the generator)
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _string_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = as_array(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.string()) if len(arr) else pa.array([], pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        arr = pc.cast(arr, pa.string())
    return arr


def byte_matrix(arr: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(n, width) uint8 view of a string array whose values all have the same length, else None."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    if n == 0 or lengths.min() != lengths.max():
        return None
    width = int(lengths[0])
    data = np.frombuffer(arr.buffers()[2] or b"", dtype=np.uint8)
    return data[offsets[0] : offsets[0] + n * width].reshape(n, width), lengths


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` through a sort: numpy 2.x hashes integers in ``np.unique``, 40x slower than sorting."""
    if values.size < 2:
        return values.copy()
    s = np.sort(values)
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, occurrences of each), like ``np.unique(..., return_counts=True)``."""
    if values.size == 0:
        return values.copy(), np.zeros(0, dtype=np.int64)
    s = np.sort(values)
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return s[starts], np.diff(np.append(starts, s.size))


def dictionary_parts(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(dictionary, int64 indices with nulls as -1) of a dictionary array."""
    indices = arr.indices
    if indices.null_count:
        raw = np.asarray(pc.fill_null(indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        raw = np.asarray(indices.to_numpy(zero_copy_only=False)).astype(np.int64, copy=False)
    return arr.dictionary, raw


def hash_strings(column: pa.Array | pa.ChunkedArray, salt: int = 0) -> np.ndarray:
    """uint64 hash of every value (null → NULL_HASH); equal strings hash equally everywhere.

    Dictionary arrays (low-cardinality columns read with ``read_dictionary``) hash each distinct value once
    and gather by index, so the strings are never materialised.
    """
    arr = as_array(column)
    if pa.types.is_dictionary(arr.type):
        dictionary, codes = dictionary_parts(arr)
        values = np.append(hash_strings(dictionary, salt), NULL_HASH)  # index -1 → NULL_HASH
        return values[codes]
    arr = _string_array(arr)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        # hash the values only: ids of one kind share a width, so the fast fixed-width path applies
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        out = np.full(n, NULL_HASH, dtype=np.uint64)
        if arr.null_count < n:
            out[valid] = hash_strings(arr.drop_null(), salt)
        return out
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    width = int(lengths.max())
    data = np.frombuffer(arr.buffers()[2] or b"\0", dtype=np.uint8)
    if width > _LONG:
        out = np.empty(n, dtype=np.uint64)
        raw = data.tobytes()
        for i, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
            out[i] = int.from_bytes(hashlib.blake2b(raw[a:b], digest_size=8).digest(), "little")
        return mix64(out ^ np.uint64(salt))
    words = (width + 7) // 8
    fixed = int(lengths.min()) == width
    if fixed and width == words * 8:
        matrix = data[offsets[0] : offsets[0] + n * width].view(np.uint64).reshape(n, words)
    else:
        padded = np.zeros((n, words * 8), dtype=np.uint8)
        if fixed:
            padded[:, :width] = data[offsets[0] : offsets[0] + n * width].reshape(n, width)
        elif width:
            idx = offsets[:-1, None] + np.arange(width)[None, :]
            inside = np.arange(width)[None, :] < lengths[:, None]
            padded[:, :width] = np.where(inside, data[np.minimum(idx, data.size - 1)], 0)
        matrix = padded.view(np.uint64)
    h = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(salt)
    for w in range(words):
        h = mix64(h ^ matrix[:, w])
    return h


def _apply_nulls(arr: pa.Array, h: np.ndarray) -> np.ndarray:
    if arr.null_count:
        h[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = NULL_HASH
    return h


def combine(*parts: np.ndarray) -> np.ndarray:
    """Order-sensitive combination of per-row uint64 hashes (or int64 values) into one key."""
    h = np.full(parts[0].shape[0], np.uint64(0x243F6A8885A308D3), dtype=np.uint64)
    for part in parts:
        h = mix64(h ^ part.astype(np.uint64, copy=False))
    return h


def signature_prefixes(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 of the first 16 hex digits, bool well-formed) for each signature.

    Dedup works on these 8-byte prefixes (a collision among 10^10 random signatures is ~3 % likely, among
    10^7 it is ~3e-6), so a batch of 10M rows needs 80 MB of keys instead of 640 MB of hex text.
    Malformed signatures (wrong length, upper case, non-hex, null) fall back to a hash of the raw value so
    exact duplicates are still found.
    """
    arr = _string_array(column)
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    view = byte_matrix(arr) if arr.null_count == 0 else None
    if view is not None and view[0].shape[1] == 64:
        matrix = view[0]
        # C-speed round trip: unhexlify rejects non-hex digits, and hexlify(digest) equals the input only if
        # every digit was lower case, so the common case costs two linear passes and a memcmp (~14 ms/250k)
        try:
            flat = np.ascontiguousarray(matrix).reshape(-1)
            digest = binascii.unhexlify(flat.data)
            all_ok = pa.py_buffer(binascii.hexlify(digest)).equals(pa.py_buffer(flat))  # memcmp
        except (binascii.Error, ValueError):
            all_ok = False
        if all_ok:
            prefix = np.frombuffer(digest, dtype=">u8").reshape(n, 4)[:, 0].astype(np.uint64)
            return prefix, np.ones(n, dtype=bool)
        ok = (_HEX_VALUE[matrix] != 255).all(axis=1)
        prefix = np.zeros(n, dtype=np.uint64)
        if ok.any():
            head = np.ascontiguousarray(matrix[ok, :16]).tobytes().decode("ascii")
            prefix[ok] = np.frombuffer(bytes.fromhex(head), dtype=">u8").astype(np.uint64)
        if not ok.all():
            prefix[~ok] = hash_strings(arr.filter(pa.array(~ok)), salt=1)
        return prefix, ok
    return hash_strings(arr, salt=1), np.zeros(n, dtype=bool)


def hex_prefix(value: int) -> str:
    return f"{int(value):016x}"


def signatures_to_prefixes(signatures: object) -> np.ndarray:
    """Known signatures (hex strings, 32-byte digests or 8-byte prefixes) → uint64 prefixes."""
    out: list[int] = []
    for item in signatures:  # type: ignore[attr-defined]
        if isinstance(item, str):
            out.append(int(item[:16], 16))
        elif isinstance(item, bytes | bytearray):
            out.append(int.from_bytes(bytes(item[:8]), "big"))
        else:
            out.append(int(item))
    return sorted_unique(np.asarray(out, dtype=np.uint64))
