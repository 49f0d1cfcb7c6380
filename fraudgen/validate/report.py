"""report.json and a self-contained report.html (plots inlined as base64 PNG) for one validated batch.

The HTML opens with the verdict and the failed gates, so a person sees at a glance whether the batch is
sound; the plots and tables below show why (amount per scenario, hourly rhythm, fraud per scenario,
KS/AD per feature, every check with examples).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from fraudgen.validate.gates import ValidationReport
from fraudgen.validate.statistics import GROUPS
from fraudgen.validate.summary import AMOUNT_BINS, BlockSummary

_ENV = Environment(
    loader=PackageLoader("fraudgen.validate", "templates"), autoescape=select_autoescape(["html", "j2"])
)


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _amount_plot(summary: BlockSummary) -> str:
    fig, ax = plt.subplots(figsize=(9, 4))
    edges = AMOUNT_BINS[2:-1]
    centres = np.sqrt(edges[:-1] * edges[1:])
    for group in GROUPS:
        hist = summary.amount_hist.get(group)
        if hist is None or hist.sum() == 0:
            continue
        inner = hist[2 : 2 + centres.size].astype(float)
        ax.plot(
            centres,
            inner / hist.sum(),
            label=f"{group} ({int(hist.sum()):,})",
            lw=1.6 if group == "legit" else 1.1,
        )
    ax.set_xscale("log")
    ax.set_xlabel("amount")
    ax.set_ylabel("share of rows")
    ax.set_title("Amount distribution per scenario (all rows)")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _hourly_plot(summary: BlockSummary) -> str:
    fig, ax = plt.subplots(figsize=(9, 3))
    for group, colour in (("legit", "tab:blue"), ("fraud", "tab:red")):
        hist = summary.hourly.get(group)
        if hist is not None and hist.sum():
            ax.plot(
                range(24),
                hist / hist.sum(),
                marker="o",
                ms=3,
                label=f"{group} ({int(hist.sum()):,})",
                color=colour,
            )
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("share of rows")
    ax.set_title("Hourly pattern")
    ax.legend(fontsize=8)
    return _png(fig)


def _fraud_plot(summary: BlockSummary) -> str:
    fig, ax = plt.subplots(figsize=(9, 3))
    total = sum(summary.scenario_rows.values()) or 1
    names = [g for g in GROUPS[1:]]
    rates = [summary.scenario_rows.get(g, 0) / total * 100 for g in names]
    ax.barh(names, rates, color="tab:red")
    for i, g in enumerate(names):
        ax.text(rates[i], i, f" {summary.scenario_rows.get(g, 0):,} rows", va="center", fontsize=8)
    ax.set_xlabel("% of all rows")
    ax.set_title(f"Fraud rows per scenario (overall fraud rate {sum(rates):.2f} %)")
    ax.invert_yaxis()
    return _png(fig)


def render_html(
    report: ValidationReport, summary: BlockSummary, title: str = "fraudgen batch validation"
) -> str:
    plots = {
        "amount": _amount_plot(summary),
        "hourly": _hourly_plot(summary),
        "fraud": _fraud_plot(summary),
    }
    gate_rows = _gate_rows(report)
    return _ENV.get_template("report.html.j2").render(
        title=title, report=report, plots=plots, gate_rows=gate_rows
    )


def _gate_rows(report: ValidationReport) -> list[dict[str, object]]:
    """One row per gate family: passed or the failures with figure and limit."""
    families = [
        "schema",
        "signature",
        "rules",
        "duplicates",
        "fraud_rate",
        "scenario_mix",
        "distribution",
        "fidelity",
        "memorisation",
    ]
    rows: list[dict[str, object]] = []
    for family in families:
        failed = [
            f
            for f in report.failures
            if f.gate == family or f.gate.startswith(family + ".") or f.gate.startswith(family + "_")
        ]
        rows.append({"gate": family, "passed": not failed, "failures": failed})
    return rows


def write_report(report: ValidationReport, summary: BlockSummary, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(report.to_json(), encoding="utf-8")
    html_path.write_text(render_html(report, summary), encoding="utf-8")
    return json_path, html_path
