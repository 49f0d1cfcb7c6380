"""Validation as a pipeline stage: summarise blocks (in Ray Data workers), merge, evaluate against gates.

``summarise_block`` is the per-block map function, ``merge`` the reduction and ``evaluate`` the verdict;
``validate_table`` and ``validate_dataset`` wire them for in-process use and for written batches.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from fraudgen.validate import rules as rules_mod
from fraudgen.validate.dedup import batch_duplicates, drop_duplicates
from fraudgen.validate.gates import GateConfig, GateFailure, ValidationReport, fail
from fraudgen.validate.hashing import NULL_HASH, hash_strings
from fraudgen.validate.memorisation import dcr_report, exact_copies, training_keys
from fraudgen.validate.schema_checks import check_block
from fraudgen.validate.statistics import distribution_tests, fidelity, global_sample, sample_block
from fraudgen.validate.summary import BlockSummary, CheckCount
from fraudgen.validate.summary import merge as merge_summaries

__all__ = [
    "BlockSummary",
    "GateConfig",
    "GateFailure",
    "ValidationReport",
    "drop_duplicates",
    "evaluate",
    "merge",
    "summarise_block",
    "validate_dataset",
    "validate_table",
]

log = structlog.get_logger(__name__)
#: above this many rows validate_dataset uses Ray Data (when Ray is not already initialised)
RAY_ROWS = 2_000_000
READ_BATCH_ROWS = 262_144
#: row groups larger than this are read in READ_BATCH_ROWS slices (memory stays bounded)
MAX_BLOCK_ROWS = 1_048_576
#: string columns read as Arrow dictionaries: Parquet stores them dictionary-encoded, so the reader skips
#: building one string per row, and the checks work on the few distinct values (enum and ISO checks, hashes)
DICTIONARY_COLUMNS = (
    "batch_id",
    "tenant_id",
    "user_id",
    "account_id",
    "card_id",
    "merchant_id",
    "merchant_category",
    "counterparty_id",
    "currency",
    "transaction_type",
    "channel",
    "status",
    "device_id",
    "ip_address",
    "country",
    "fraud_scenario",
    "fraud_case_id",
    "source",
)


#: typical rows of one fraud case (card-testing bursts ~10, merchant cases ~16, phishing ~1.6)
CASE_ROWS = 10


def _window_us(window: tuple[datetime, datetime] | None) -> tuple[int, int] | None:
    if window is None:
        return None
    lo, hi = (w if w.tzinfo else w.replace(tzinfo=UTC) for w in window)
    return int(lo.timestamp() * 1_000_000), int(hi.timestamp() * 1_000_000)


def summarise_block(
    table: pa.Table, window: tuple[datetime, datetime] | None, sample_size: int = 20_000, seed: int = 0
) -> BlockSummary:
    """All per-block work: schema checks, row rules and cross-block keys, histograms, bounded samples."""
    summary = BlockSummary(rows=table.num_rows, blocks=1, window=_window_us(window), sample_size=sample_size)
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()  # one copy here instead of one per column use
    cols = check_block(table, summary.window, summary)
    user = cols.string("user_id")
    user_hash = hash_strings(user) if user is not None else np.full(cols.n, NULL_HASH, dtype=np.uint64)
    rules_mod.check_rules(cols, summary, user_hash)
    sample_block(cols, summary, user_hash, seed)
    summary.signature_keys.append(cols.signature_keys)
    return summary


def merge(summaries: Iterable[BlockSummary]) -> BlockSummary:
    return merge_summaries(summaries)


def _sum(checks: dict[str, CheckCount], prefix: str, exclude: Collection[str] = ()) -> int:
    return sum(c.count for name, c in checks.items() if name.startswith(prefix) and name not in exclude)


def evaluate(
    summary: BlockSummary,
    gates: GateConfig,
    reference: BlockSummary | None = None,
    expected_fraud_rate: float | None = None,
    expected_mix: dict[str, float] | None = None,
    training_rows: pa.Table | None = None,
    holdout_rows: pa.Table | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> ValidationReport:
    """Apply every gate to a merged summary. ``known_signatures`` (signatures of earlier batches, e.g. from
    Postgres) turns on the cross-batch duplicate gate."""
    failures: list[GateFailure] = []
    checks = dict(summary.checks)
    for name, c in rules_mod.resolve(summary).items():
        checks.setdefault(name, CheckCount()).add(c.count, c.examples)
    schema_errors = _sum(checks, "schema.", {"schema.signature_mismatch"}) + len(summary.column_errors)
    if schema_errors > gates.max_schema_errors:
        names = sorted(
            {
                *(k for k in checks if k.startswith("schema.") and k != "schema.signature_mismatch"),
                *(f"column:{c}" for c in summary.column_errors),
            }
        )
        fail(
            failures,
            "schema",
            schema_errors,
            gates.max_schema_errors,
            f"{schema_errors} schema error(s): {', '.join(names)}",
        )
    mismatch_rate = (
        summary.signature_mismatch / summary.signature_checked if summary.signature_checked else 0.0
    )
    if mismatch_rate > gates.max_signature_mismatch_rate:
        fail(
            failures,
            "signature",
            mismatch_rate,
            gates.max_signature_mismatch_rate,
            f"{summary.signature_mismatch} of {summary.signature_checked} sampled signatures do not match",
        )
    rule_violations = _sum(checks, "rules.")
    if rule_violations > gates.max_rule_violations:
        names = sorted(k for k in checks if k.startswith("rules."))
        fail(
            failures,
            "rules",
            rule_violations,
            gates.max_rule_violations,
            f"{rule_violations} business-rule violation(s): {', '.join(names)}",
        )
    dedup, keys = batch_duplicates(summary.signature_keys, known_signatures)
    if not gates.remove_duplicates and dedup["duplicate_rate"] > gates.max_duplicate_rate:
        fail(
            failures,
            "duplicates",
            dedup["duplicate_rate"],
            gates.max_duplicate_rate,
            f"{dedup['duplicate_rows']} duplicate signature(s) (rate {dedup['duplicate_rate']:.2e})",
        )
    if dedup.get("known_signature_rows", 0) > gates.max_known_signature_rows:
        fail(
            failures,
            "duplicates_earlier_batches",
            dedup["known_signature_rows"],
            gates.max_known_signature_rows,
            f"{dedup['known_signature_rows']} row(s) already present in earlier batches",
        )
    metrics = _fraud_metrics(summary, gates, expected_fraud_rate, expected_mix, failures)
    reference_kind = "batch"
    if reference is None and summary.rows > 0:
        from fraudgen.validate.profile import expected_profile

        reference = expected_profile(summary, gates.reference_rows, gates.reference_seed)
        reference_kind = "generator expected profile"
    tests = distribution_tests(summary, reference, gates.min_test_rows) if reference is not None else []
    for t in tests:
        t["failed"] = t["ks_statistic"] > gates.max_ks_statistic and t["ks_pvalue"] < gates.ks_alpha
        if t["failed"]:
            fail(
                failures,
                f"distribution.{t['group']}.{t['feature']}",
                t["ks_statistic"],
                gates.max_ks_statistic,
                f"{t['feature']} of {t['group']} differs from the reference: KS {t['ks_statistic']:.3f} "
                f"(p={t['ks_pvalue']:.1e}, AD p={t['ad_pvalue']:.1e}, n={t['n']} vs {t['n_reference']})",
            )
    fid = fidelity(summary, reference, tests) if reference is not None else {}
    if "score" in fid and fid["score"] < gates.min_fidelity:
        fail(failures, "fidelity", fid["score"], gates.min_fidelity, f"fidelity score {fid['score']:.3f}")
    memo: dict[str, Any] = {}
    if training_rows is not None:
        copies = exact_copies(keys, training_keys(training_rows))
        memo = {"exact_copies": int(copies.sum())}
        memo.update(dcr_report(global_sample(summary), training_rows, holdout_rows))
        if memo["exact_copies"] > gates.max_memorised_rows:
            fail(
                failures,
                "memorisation.exact_copies",
                memo["exact_copies"],
                gates.max_memorised_rows,
                f"{memo['exact_copies']} row(s) copy a training row",
            )
        share = memo.get("closer_than_holdout_p5")
        if share is not None and share > gates.max_close_to_training_share:
            fail(
                failures,
                "memorisation.near_copies",
                share,
                gates.max_close_to_training_share,
                f"{share:.1%} of rows closer to training than the holdout's 5th percentile",
            )
    metrics.update(
        rows=summary.rows,
        blocks=summary.blocks,
        schema_errors=schema_errors,
        rule_violations=rule_violations,
        signature_checked=summary.signature_checked,
        signature_mismatch=summary.signature_mismatch,
        duplicate_rows=dedup["duplicate_rows"],
        fidelity=fid.get("score"),
    )
    return ValidationReport(
        passed=not failures,
        rows=summary.rows,
        failures=failures,
        metrics=metrics,
        checks={k: {"count": c.count, "examples": c.examples} for k, c in sorted(checks.items())},
        column_errors=summary.column_errors,
        dedup=dedup,
        statistics=tests,
        fidelity=fid,
        memorisation=memo,
        gates=gates,
        reference=reference_kind,
    )


def _fraud_metrics(
    summary: BlockSummary,
    gates: GateConfig,
    expected_rate: float | None,
    expected_mix: dict[str, float] | None,
    failures: list[GateFailure],
) -> dict[str, Any]:
    rows = summary.scenario_rows
    total = sum(rows.values())
    fraud = total - rows.get("legit", 0)
    rate = fraud / total if total else 0.0
    shares = {k: v / fraud for k, v in rows.items() if k != "legit"} if fraud else {}
    out: dict[str, Any] = {"fraud_rate": rate, "scenario_rows": dict(rows), "scenario_share": shares}
    if expected_rate is not None and total:
        slack = gates.fraud_rate_tolerance * expected_rate + 3 * np.sqrt(
            expected_rate * (1 - expected_rate) / total
        )
        out["expected_fraud_rate"] = expected_rate
        if abs(rate - expected_rate) > slack:
            fail(
                failures,
                "fraud_rate",
                rate,
                expected_rate,
                f"fraud rate {rate:.4f}, expected {expected_rate:.4f} ± {slack:.4f}",
            )
    if expected_mix and fraud:
        weight = sum(expected_mix.values()) or 1.0
        names = set(expected_mix) | set(shares)
        tv = 0.5 * sum(abs(shares.get(k, 0.0) - expected_mix.get(k, 0.0) / weight) for k in names)
        # fraud comes in whole cases (about CASE_ROWS rows each), so a small batch cannot match the mix
        # closer than about one case per scenario: the limit widens by that granularity
        limit = gates.max_mix_tv + 0.5 * len(names) * CASE_ROWS / fraud
        out["scenario_mix_tv"] = tv
        out["scenario_mix_tv_limit"] = limit
        if tv > limit:
            fail(
                failures,
                "scenario_mix",
                tv,
                limit,
                f"scenario mix differs from the request (TV {tv:.3f} > {limit:.3f})",
            )
    return out


def validate_table(
    table: pa.Table,
    gates: GateConfig | None = None,
    window: tuple[datetime, datetime] | None = None,
    reference: pa.Table | None = None,
    expected_fraud_rate: float | None = None,
    expected_mix: dict[str, float] | None = None,
    training_rows: pa.Table | None = None,
    holdout_rows: pa.Table | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> ValidationReport:
    """In-process validation of one table (API batches up to ~100k rows, tests)."""
    report, _ = validate_table_with_summary(
        table,
        gates,
        window,
        reference,
        expected_fraud_rate,
        expected_mix,
        training_rows,
        holdout_rows,
        known_signatures,
    )
    return report


def validate_table_with_summary(
    table: pa.Table,
    gates: GateConfig | None = None,
    window: tuple[datetime, datetime] | None = None,
    reference: pa.Table | None = None,
    expected_fraud_rate: float | None = None,
    expected_mix: dict[str, float] | None = None,
    training_rows: pa.Table | None = None,
    holdout_rows: pa.Table | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> tuple[ValidationReport, BlockSummary]:
    """Like :func:`validate_table`, also returning the summary (what ``write_report`` plots)."""
    gates = gates or GateConfig()
    summary = merge(summarise_block(b, window, gates.sample_size) for b in _slices(table))
    ref = None
    if reference is not None:
        ref = merge(summarise_block(b, window, gates.sample_size) for b in _slices(reference))
    report = evaluate(
        summary, gates, ref, expected_fraud_rate, expected_mix, training_rows, holdout_rows, known_signatures
    )
    return report, summary


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    if table.num_rows == 0:
        yield table
    for start in range(0, table.num_rows, READ_BATCH_ROWS):
        yield table.slice(start, READ_BATCH_ROWS)


# --- written batches ------------------------------------------------------------------------------------


def _resolve(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path in it): ``s3://bucket/key`` goes through the same S3 settings as the
    writer (AWS_* variables), so a batch written to S3 is validated where it lies."""
    if not path.startswith("s3://"):
        return None, path
    from fraudgen.sinks.store import open_store

    bucket_and_key = path.removeprefix("s3://")
    fs, _ = open_store(f"s3://{bucket_and_key.split('/', 1)[0]}").arrow_filesystem()
    return fs, bucket_and_key


def read_blocks(path: str, row_groups: Iterable[int] | None = None) -> Iterator[pa.Table]:
    """The blocks of one Parquet file (or of some of its row groups): one per row group, single-chunk
    columns, low-cardinality strings as dictionaries, read on the calling thread so a Ray task uses exactly
    the core it reserved."""
    fs, path = _resolve(path)
    schema = pq.read_schema(path, filesystem=fs)
    strings = [
        name
        for name in DICTIONARY_COLUMNS
        if name in schema.names
        and (pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type))
    ]
    parquet = pq.ParquetFile(path, read_dictionary=strings, filesystem=fs)
    if parquet.metadata.num_rows == 0:
        yield parquet.schema_arrow.empty_table()
        return
    for group in range(parquet.num_row_groups) if row_groups is None else row_groups:
        if parquet.metadata.row_group(group).num_rows <= MAX_BLOCK_ROWS:
            yield parquet.read_row_group(group, use_threads=False)
            continue
        for batch in parquet.iter_batches(READ_BATCH_ROWS, row_groups=[group], use_threads=False):
            yield pa.Table.from_batches([batch])


def summarise_file(
    path: str,
    window: tuple[datetime, datetime] | None,
    sample_size: int,
    row_groups: Iterable[int] | None = None,
) -> BlockSummary:
    """One merged summary of all blocks of a Parquet file (or of the given row groups)."""
    return merge(summarise_block(block, window, sample_size) for block in read_blocks(path, row_groups))


def work_units(files: list[str], rows_per_unit: int = READ_BATCH_ROWS) -> list[dict[str, Any]]:
    """Split files into units of consecutive row groups of about ``rows_per_unit`` rows (at least one group),
    so one big file still spreads over every core and many small row groups do not make many tiny tasks."""
    units: list[dict[str, Any]] = []
    for path in files:
        fs, where = _resolve(path)
        meta = pq.read_metadata(where, filesystem=fs)
        groups: list[int] = []
        rows = 0
        for group in range(meta.num_row_groups):
            groups.append(group)
            rows += meta.row_group(group).num_rows
            if rows >= rows_per_unit:
                units.append({"path": path, "row_groups": groups})
                groups, rows = [], 0
        if groups or meta.num_row_groups == 0:
            units.append({"path": path, "row_groups": groups or None})
    return units


def _batch_files(uri: str) -> tuple[list[str], dict[str, Any]]:
    """Parquet files of a batch directory or file, and its manifest.json (empty when absent)."""
    path = Path(uri)
    if uri.startswith("s3://"):
        return _s3_batch_files(uri.rstrip("/"))
    if not path.exists():
        raise FileNotFoundError(f"{uri}: no such file or directory")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{uri}: not a Parquet file")
        return [str(path)], {}
    files = sorted(str(p) for p in path.rglob("*.parquet"))
    if not files:
        raise ValueError(f"{uri}: no Parquet files (expected <root>/batch_id=<id>/part-*.parquet)")
    manifest: dict[str, Any] = {}
    if (path / "manifest.json").is_file():
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    return files, manifest


def _s3_batch_files(uri: str) -> tuple[list[str], dict[str, Any]]:
    from fraudgen.sinks.store import MANIFEST, StoreError, open_store

    store = open_store(uri)
    try:
        keys = store.list("")
        manifest = json.loads(store.read_bytes(MANIFEST)) if MANIFEST in keys else {}
    except StoreError as exc:
        raise ValueError(str(exc)) from exc
    files = [f"{uri}/{key}" for key in keys if key.endswith(".parquet")]
    if not files:
        raise ValueError(
            f"{uri}: no Parquet files (expected s3://bucket/prefix/batch_id=<id>/part-*.parquet)"
        )
    return files, manifest


def manifest_expectations(manifest: dict[str, Any]) -> dict[str, Any]:
    """Window, fraud rate and mix of the generation request recorded in a manifest (when present)."""
    nested = manifest.get("request")
    request: dict[str, Any] = nested if isinstance(nested, dict) else manifest
    out: dict[str, Any] = {}
    try:
        if request.get("start") and request.get("end"):
            out["window"] = (
                datetime.fromisoformat(str(request["start"]).replace("Z", "+00:00")),
                datetime.fromisoformat(str(request["end"]).replace("Z", "+00:00")),
            )
        if request.get("fraud_rate") is not None:
            out["expected_fraud_rate"] = float(request["fraud_rate"])
        if isinstance(request.get("scenario_mix"), dict):
            out["expected_mix"] = {str(k): float(v) for k, v in request["scenario_mix"].items()}
    except (TypeError, ValueError, AttributeError):
        return {}
    return out


def summarise_files(
    files: list[str], window: tuple[datetime, datetime] | None, gates: GateConfig, use_ray: bool | None = None
) -> BlockSummary:
    """Summaries of Parquet files: Ray Data blocks when Ray runs (or the batch is large), else in-process."""
    import ray

    rows = (
        sum(pq.read_metadata(_resolve(f)[1], filesystem=_resolve(f)[0]).num_rows for f in files)
        if use_ray is None
        else 0
    )
    if use_ray is None:
        use_ray = ray.is_initialized() or rows > RAY_ROWS
    if not use_ray:
        return merge(summarise_file(f, window, gates.sample_size) for f in files)
    from fraudgen.raylocal import init_ray

    init_ray()
    sample_size = gates.sample_size

    def summarise(batch: pa.Table) -> pa.Table:
        """One Ray Data task per work unit: read, check, summarise; only the summary leaves the worker."""
        blobs = [
            pickle.dumps(summarise_file(unit["path"], window, sample_size, unit["row_groups"]), protocol=5)
            for unit in batch.to_pylist()
        ]
        return pa.table({"summary": pa.array(blobs, pa.large_binary())})

    units = work_units(files)
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        summarise, batch_format="pyarrow", batch_size=1, num_cpus=1
    )
    summary = BlockSummary(sample_size=sample_size)
    pending: list[BlockSummary] = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        assert isinstance(batch, pa.Table)
        for blob in batch.column("summary").to_pylist():
            pending.append(pickle.loads(blob))
            if len(pending) >= 16:
                summary = merge([summary, *pending]) if summary.rows else merge(pending)
                pending = []
    if pending:
        summary = merge([summary, *pending]) if summary.rows else merge(pending)
    return summary


def validate_dataset(
    uri: str,
    settings: Any = None,
    reference_uri: str | None = None,
    gates: GateConfig | None = None,
    use_ray: bool | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> ValidationReport:
    """Validate a written batch (``<root>/batch_id=<id>`` directory or Parquet file/directory)."""
    report, _ = validate_dataset_with_summary(uri, settings, reference_uri, gates, use_ray, known_signatures)
    return report


def validate_dataset_with_summary(
    uri: str,
    settings: Any = None,
    reference_uri: str | None = None,
    gates: GateConfig | None = None,
    use_ray: bool | None = None,
    known_signatures: Collection[bytes | str] | None = None,
) -> tuple[ValidationReport, BlockSummary]:
    if gates is None:
        gates = GateConfig.from_settings(settings) if settings is not None else GateConfig()
    files, manifest = _batch_files(uri)
    expected = manifest_expectations(manifest)
    window = expected.get("window")
    summary = summarise_files(files, window, gates, use_ray)
    reference = None
    if reference_uri is not None:
        ref_files, _ = _batch_files(reference_uri)
        reference = summarise_files(ref_files, window, gates, use_ray)
    log.info("validation.summarised", uri=uri, rows=summary.rows, blocks=summary.blocks)
    report = evaluate(
        summary,
        gates,
        reference,
        expected.get("expected_fraud_rate"),
        expected.get("expected_mix"),
        known_signatures=known_signatures,
    )
    return report, summary
