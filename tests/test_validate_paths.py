"""The fast paths of validation agree with the plain ones.

Written Parquet is read with dictionary columns and one block per row group; cross-block rules look many
candidate keys up among few sorted needles (with a bitmap prefilter); bottom-k users use a partition; the
signature column is parsed with a C round trip. Each is checked against a direct computation, and the
cross-file rules are checked on planted defects whose partner rows sit in other files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_table
from fraudgen.validate.dataset import read_blocks, summarise_file, validate_dataset_with_summary, work_units
from fraudgen.validate.hashing import hash_strings, signature_prefixes, sorted_unique, unique_counts
from fraudgen.validate.rules import _lookup, earliest, needle_index
from fraudgen.validate.stage import merge, validate_table_with_summary
from fraudgen.validate.summary import bottom_k_users
from fraudgen.world import mix64

REQUEST = GenerationRequest(rows=20_000, seed=21, shard_rows=5_000)
FILE_ROWS = 5_000


@pytest.fixture(scope="module")
def batch() -> pa.Table:
    return generate_table(REQUEST)


def write_files(table: pa.Table, directory: Path) -> Path:
    directory.mkdir(parents=True)
    for i, start in enumerate(range(0, table.num_rows, FILE_ROWS)):
        pq.write_table(table.slice(start, FILE_ROWS), directory / f"part-{i:05d}.parquet")
    return directory


def test_dictionary_hashes_equal_plain_string_hashes() -> None:
    values = ["u-1", None, "user-000022", "u-1", None, "x" * 200, ""]
    plain = hash_strings(pa.array(values))
    assert np.array_equal(hash_strings(pc.dictionary_encode(pa.array(values))), plain)
    chunked = pa.chunked_array([pa.array(values[:3]), pa.array(values[3:])])
    assert np.array_equal(hash_strings(chunked), plain)
    assert plain[0] == plain[3] and plain[1] == plain[4] and len(set(plain.tolist())) == 5


def test_sorted_unique_and_counts_match_numpy() -> None:
    values = np.random.default_rng(1).integers(0, 50, 1_000).astype(np.uint64)
    assert np.array_equal(sorted_unique(values), np.unique(values))
    distinct, counts = unique_counts(values)
    ref_distinct, ref_counts = np.unique(values, return_counts=True)
    assert np.array_equal(distinct, ref_distinct) and np.array_equal(counts, ref_counts)


@pytest.mark.parametrize("hay_rows", [30, 100_000])  # below and above the bitmap prefilter's threshold
def test_needle_lookup_matches_isin(hay_rows: int) -> None:
    rng = np.random.default_rng(hay_rows)
    needles = rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)
    needles = np.concatenate([needles, needles[:10]])  # repeated needles
    keys = rng.integers(0, 2**63, hay_rows, dtype=np.int64).astype(np.uint64)
    planted = rng.choice(hay_rows, 12, replace=False)
    keys[planted] = needles[:12]
    ts = rng.integers(0, 1_000, hay_rows)
    distinct, where = needle_index(needles)
    rows, pos = _lookup(distinct, keys)
    assert np.array_equal(np.sort(rows), np.flatnonzero(np.isin(keys, needles)))
    assert np.array_equal(distinct[pos], keys[rows])
    first = earliest(keys, ts, distinct, where)
    for i, key in enumerate(needles):
        matching = ts[keys == key]
        assert first[i] == (matching.min() if matching.size else np.iinfo(np.int64).max)


def test_bottom_k_users_matches_full_sort() -> None:
    rng = np.random.default_rng(3)
    # ~20 rows per user: the first partition of 4k rows holds fewer than k users, so the search widens
    user = mix64(rng.integers(0, 2_500, 50_000).astype(np.uint64))
    rows = {"user": user, "ts": np.arange(user.size, dtype=np.int64)}
    k = 100
    kept = bottom_k_users(rows, k)
    limit = np.unique(user)[k - 1]
    assert np.array_equal(kept["ts"], rows["ts"][user <= limit])
    assert sorted_unique(kept["user"]).size == k
    few = {"user": user[:50], "ts": rows["ts"][:50]}
    assert bottom_k_users(few, k) is few


def test_signature_parsing_flags_each_malformed_value() -> None:
    good = "0123456789abcdef" * 4
    values = [
        good,
        good.upper(),  # upper case
        good[:30] + " " + good[31:],  # whitespace (bytes.fromhex would skip it)
        good[:63] + "g",  # not hex
        "fedcba9876543210" * 4,
    ]
    prefix, ok = signature_prefixes(pa.array(values))
    assert ok.tolist() == [True, False, False, False, True]
    assert int(prefix[0]) == int(good[:16], 16) and int(prefix[4]) == 0xFEDCBA9876543210
    clean, all_ok = signature_prefixes(pa.array([good, values[4]]))
    assert all_ok.all() and np.array_equal(clean, prefix[[0, 4]])


def test_written_parquet_reads_dictionaries_and_matches_in_process(batch: pa.Table, tmp_path: Path) -> None:
    directory = write_files(batch, tmp_path / "batch")
    block = next(read_blocks(str(directory / "part-00000.parquet")))
    assert pa.types.is_dictionary(block.schema.field("user_id").type)
    assert not pa.types.is_dictionary(block.schema.field("signature").type)
    written, s_written = validate_dataset_with_summary(str(directory), use_ray=False)
    in_memory, s_memory = validate_table_with_summary(batch)
    assert written.passed and in_memory.passed
    assert written.checks == in_memory.checks and written.dedup == in_memory.dedup
    assert s_written.scenario_rows == s_memory.scenario_rows and s_written.counts == s_memory.counts
    for name in ("signature_keys", "purchase_keys"):
        a, b = getattr(s_written, name), getattr(s_memory, name)
        assert np.array_equal(np.sort(np.concatenate(a)), np.sort(np.concatenate(b)))
    for name, arrays in s_memory.haystacks.items():
        expected = sorted_unique(np.concatenate(arrays))
        assert np.array_equal(sorted_unique(np.concatenate(s_written.haystacks[name])), expected)
    for group, sample in s_memory.samples.items():
        assert np.array_equal(np.sort(sample["priority"]), np.sort(s_written.samples[group]["priority"]))


def test_cross_file_rules_on_written_parquet(batch: pa.Table, tmp_path: Path) -> None:
    """Fraud rows go to the last files, so every chargeback's purchase and every takeover victim's history
    lies in another file: the clean batch must pass, and planted defects must still be found."""
    fraud = np.asarray(batch.column("is_fraud").to_numpy(zero_copy_only=False), dtype=bool)
    ttype = np.asarray(batch.column("transaction_type").to_pylist(), dtype=object)
    late = fraud | (ttype == "chargeback")
    order = np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])
    arranged = batch.take(pa.array(order))
    report, _ = validate_dataset_with_summary(str(write_files(arranged, tmp_path / "clean")), use_ray=False)
    assert report.passed, report.failure_lines()
    assert report.metrics["rule_violations"] == 0

    rows = arranged.select(["transaction_type", "fraud_case_id", "fraud_scenario", "user_id", "device_id"])
    records = rows.to_pylist()
    case = next(
        r["fraud_case_id"]
        for r in records
        if r["transaction_type"] == "chargeback" and r["fraud_scenario"] == "chargeback_fraud"
    )
    purchases = [
        i for i, r in enumerate(records) if r["fraud_case_id"] == case and r["transaction_type"] == "purchase"
    ]
    known_devices: dict[str, str] = {}
    for r in records:
        if r["fraud_scenario"] is None and r["device_id"] is not None:
            known_devices.setdefault(r["user_id"], r["device_id"])
    takeover = next(
        i
        for i, r in enumerate(records)
        if r["fraud_scenario"] == "account_takeover" and r["user_id"] in known_devices
    )
    devices = arranged.column("device_id").to_pylist()
    devices[takeover] = known_devices[records[takeover]["user_id"]]
    broken = arranged.set_column(
        arranged.schema.get_field_index("device_id"), "device_id", pa.array(devices, pa.string())
    )
    keep = np.ones(broken.num_rows, dtype=bool)
    keep[purchases] = False
    broken = broken.filter(pa.array(keep))
    report, _ = validate_dataset_with_summary(str(write_files(broken, tmp_path / "broken")), use_ray=False)
    assert not report.passed and {f.gate for f in report.failures} == {"rules"}
    assert report.checks["rules.chargeback_without_purchase"]["count"] == len(purchases)
    assert report.checks["rules.account_takeover_known_device"]["count"] == 1


def test_work_units_split_big_files_by_row_group(batch: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "one.parquet"
    pq.write_table(batch, path, row_group_size=3_000)  # 7 row groups, the last one short
    empty = tmp_path / "empty.parquet"
    pq.write_table(batch.slice(0, 0), empty)
    units = work_units([str(path), str(empty)], rows_per_unit=5_000)
    assert [u["row_groups"] for u in units] == [[0, 1], [2, 3], [4, 5], [6], [0]]
    whole = summarise_file(str(path), None, 20_000)
    parts = merge(summarise_file(u["path"], None, 20_000, u["row_groups"]) for u in units)
    assert parts.rows == whole.rows == batch.num_rows and (whole.blocks, parts.blocks) == (7, 8)  # + empty
    assert {k: c.count for k, c in parts.checks.items()} == {k: c.count for k, c in whole.checks.items()}
    keys = [np.sort(np.concatenate(s.signature_keys)) for s in (parts, whole)]
    assert np.array_equal(*keys)
