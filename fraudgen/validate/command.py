"""``fraudgen validate PATH [--reference PATH] [--report DIR] [--json]`` as a plain function.

Exit codes (DESIGN.md): 0 every gate passed, 1 a gate failed (each failure printed with its figure),
2 usage or input error (path missing, not a batch, unreadable Parquet).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import pyarrow as pa

from fraudgen.validate.gates import GateConfig


def validate_command(
    path: str, reference: str | None, report_dir: str | None, as_json: bool, settings: Any
) -> int:
    from fraudgen.validate.dataset import validate_dataset_with_summary
    from fraudgen.validate.report import write_report

    # with --json, stdout carries the report only: logs and progress bars go to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet:
            gates = GateConfig.from_settings(settings) if settings is not None else GateConfig()
            report, summary = validate_dataset_with_summary(path, settings, reference, gates)
    except (FileNotFoundError, ValueError, pa.ArrowInvalid, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report_dir:
        with quiet:
            json_path, html_path = write_report(report, summary, report_dir)
        if not as_json:
            print(f"report: {json_path} {html_path}")
    if as_json:
        print(report.to_json())
    else:
        verdict = "PASSED" if report.passed else "FAILED"
        fid = report.fidelity.get("score")
        print(
            f"{verdict}: {report.rows} rows, fraud rate {report.metrics.get('fraud_rate', 0):.4f}, "
            f"fidelity {'n/a' if fid is None else f'{fid:.3f}'}"
        )
        for line in report.failure_lines():
            print(line)
    return 0 if report.passed else 1
