"""Validation as a pipeline stage: summarise blocks (in Ray Data workers), merge, evaluate against gates.

``summarise_block`` is the per-block map function, ``merge`` the reduction and ``evaluate`` the verdict;
``validate_table`` wires them for in-process use; written batches (local or S3, with Ray Data) are
validated by :mod:`fraudgen.validate.dataset`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, ParamSpec

import numpy as np
import pyarrow as pa
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

#: rows per in-process block, and per Ray Data work unit of a written batch
READ_BATCH_ROWS = 262_144

__all__ = [
    "BlockSummary",
    "GateConfig",
    "GateFailure",
    "ValidationReport",
    "drop_duplicates",
    "evaluate",
    "merge",
    "summarise_block",
    "validate_table",
]

log = structlog.get_logger(__name__)
P = ParamSpec("P")
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
    """In-process validation of one table (API batches up to ~100k rows, tests), with the summary that
    ``write_report`` plots; :func:`validate_table` is the same without the summary."""
    gates = gates or GateConfig()
    summary = merge(summarise_block(b, window, gates.sample_size) for b in _slices(table))
    ref = None
    if reference is not None:
        ref = merge(summarise_block(b, window, gates.sample_size) for b in _slices(reference))
    report = evaluate(
        summary, gates, ref, expected_fraud_rate, expected_mix, training_rows, holdout_rows, known_signatures
    )
    return report, summary


def report_only(
    validate: Callable[P, tuple[ValidationReport, BlockSummary]],
) -> Callable[P, ValidationReport]:
    """The same validation, returning the report alone (for callers that do not draw the plots)."""

    @functools.wraps(validate)
    def report(*args: P.args, **kwargs: P.kwargs) -> ValidationReport:
        return validate(*args, **kwargs)[0]

    report.__doc__ = f"Like :func:`{validate.__name__}`, without the summary."
    signature = inspect.signature(validate).replace(return_annotation="ValidationReport")
    report.__signature__ = signature  # type: ignore[attr-defined]  # what help() and IDEs show
    return report


validate_table = report_only(validate_table_with_summary)


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    if table.num_rows == 0:
        yield table
    for start in range(0, table.num_rows, READ_BATCH_ROWS):
        yield table.slice(start, READ_BATCH_ROWS)
