"""The ``fraudgen`` command: generate, preview and validate here; the service commands (persist, db, kafka,
dev, stream, llm, serve) in :mod:`fraudgen.cli_ops`. Exit codes: 0 ok, 1 a gate or check failed, 2 usage or
input error."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraudgen.cli_common import (
    ConfigOption,
    build_request,
    console,
    fail,
    load_settings,
    notice,
    out,
    parse_mix,
    parse_time,
)
from fraudgen.cli_ops import register
from fraudgen.config import Settings
from fraudgen.logs import configure_logging
from fraudgen.request import GenerationRequest

app = typer.Typer(
    name="fraudgen",
    help="Synthetic financial transactions with labelled fraud scenarios, generated at scale on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False) -> None:
    configure_logging("DEBUG" if verbose else "WARNING")


@app.command()
def generate(
    rows: Annotated[int, typer.Option(help="transactions to generate")],
    seed: Annotated[int, typer.Option(help="random seed (same seed and request ⇒ identical data)")] = 42,
    batch_id: Annotated[str | None, typer.Option(help="batch id (default: hash of the request)")] = None,
    out_uri: Annotated[str | None, typer.Option("--out", help="directory or s3://bucket/prefix")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    fraud_rate: Annotated[float | None, typer.Option(help="share of fraudulent rows, 0..1")] = None,
    scenarios: Annotated[str | None, typer.Option(help="mix, e.g. card_testing=2,phishing=1")] = None,
    start: Annotated[str | None, typer.Option(help="window start, ISO 8601 (UTC)")] = None,
    end: Annotated[str | None, typer.Option(help="window end, ISO 8601 (UTC), exclusive")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=4096, help="parallel Ray tasks")] = None,
    engine: Annotated[str, typer.Option(help="rules or llm")] = "rules",
    model: Annotated[str | None, typer.Option(help="model directory for --engine llm")] = None,
    sink: Annotated[str | None, typer.Option(help="extra sinks: s3,postgres,kafka")] = None,
    users: Annotated[int | None, typer.Option(help="population size")] = None,
    countries: Annotated[str | None, typer.Option(help="comma-separated ISO country codes")] = None,
    currency: Annotated[str | None, typer.Option(help="force one ISO 4217 currency")] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant id")] = None,
    shard_rows: Annotated[int | None, typer.Option(help="rows per shard/file")] = None,
    allow_failed: Annotated[bool, typer.Option(help="publish even if validation gates fail")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Generate a labelled batch with Ray Data and write it with its manifest and validation report."""
    from fraudgen.pipeline import BatchExistsError, GateFailedError, run_generation
    from fraudgen.sinks.store import StoreError

    settings = load_settings(config)
    if fmt not in ("parquet", "csv"):
        fail(f"--format: must be parquet or csv (got {fmt!r})")
    if engine not in ("rules", "llm"):
        fail(f"--engine: must be rules or llm (got {engine!r})")
    llm = None
    if engine == "llm":
        from fraudgen.pipeline import LlmOptions

        model_dir = model or settings.llm_model_dir
        if not model_dir or not Path(model_dir).is_dir():
            fail(f"--model: a trained model directory is required for --engine llm (got {model_dir!r})")
        llm = LlmOptions(
            model_dir=str(Path(model_dir).resolve()),
            adapter=settings.llm_adapter,
            device=settings.llm_device,
            torch_threads=settings.llm_torch_threads,
        )
    sinks = _parse_sinks(sink)
    request = build_request(
        rows=rows,
        seed=seed,
        batch_id=batch_id,
        fraud_rate=fraud_rate,
        scenario_mix=parse_mix(scenarios),
        start=parse_time(start, "--start"),
        end=parse_time(end, "--end"),
        users=users,
        countries=[c.strip() for c in countries.split(",") if c.strip()] if countries else None,
        currency=currency,
        tenant_id=tenant,
        shard_rows=shard_rows or settings.shard_rows,
        engine=engine,
    )
    target = out_uri or settings.output_uri
    if "s3" in sinks and not target.startswith("s3://"):
        fail(f"--sink s3: --out (or FRAUDGEN_OUTPUT_URI) must be an s3:// URI (got {target!r})")
    columns = (TextColumn("[bold]generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=as_json, disable=not console.is_terminal) as bar:
            task = bar.add_task("rows", total=request.rows)
            result = run_generation(
                request,
                settings,
                out_uri=target,
                fmt=fmt,  # type: ignore[arg-type]
                workers=workers,
                progress=lambda done, _total: bar.update(task, completed=done),
                allow_failed=allow_failed,
                llm=llm,
            )
    except GateFailedError as exc:
        _print_result(exc.result.model_dump(), as_json)
        fail(str(exc), code=1)
    except (BatchExistsError, StoreError) as exc:
        fail(f"--out: {exc}")
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--model: {exc}" if engine == "llm" else str(exc))
    summary = result.model_dump()
    persisted = _persist_after_generate(result.batch_id, target, sinks - {"s3"}, settings, request)
    if persisted:
        summary["sinks"] = persisted
    _print_result(summary, as_json)
    failed = [name for name, sink in persisted.items() if sink["state"] != "done"]
    if failed:
        fail(
            f"sink(s) {', '.join(failed)} failed; the files are intact — resume with "
            f"`fraudgen persist --batch-id {result.batch_id}`",
            code=1,
        )


def _persist_after_generate(
    batch_id: str, root: str, sinks: set[str], settings: Settings, request: GenerationRequest
) -> dict[str, dict[str, Any]]:
    """Postgres/Kafka persistence of a published batch (resumable later with ``fraudgen persist``)."""
    if not sinks:
        return {}
    from fraudgen.sinks.persist import PersistError, persist_batch

    if "kafka" in sinks:
        _publish_request_event(settings, request, batch_id, sorted(sinks))
    try:
        results = persist_batch(root, batch_id, settings, sinks)
    except PersistError as exc:
        fail(f"--sink: {exc}")
    return {name: result.to_dict() for name, result in results.items()}


def _publish_request_event(
    settings: Settings, request: GenerationRequest, batch_id: str, sinks: list[str]
) -> None:
    """The audit event of an accepted request on synthetic_generate_requests (signed like every event)."""
    import uuid
    from datetime import UTC

    from fraudgen.sinks.kafka import KafkaSinkError, publish_request_event

    if not settings.kafka_bootstrap_servers or settings.kafka_hmac_key is None:
        fail("--sink kafka: set FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS and FRAUDGEN_KAFKA_HMAC_KEY")
    event = {
        "event": "generate_request",
        "event_id": uuid.uuid4().hex,
        "received_at": datetime.now(UTC).isoformat(),
        "batch_id": batch_id,
        "origin": "cli",
        "sinks": sinks,
        "request": request.model_dump(mode="json"),
    }
    try:
        publish_request_event(
            settings.kafka_bootstrap_servers,
            event,
            settings.kafka_hmac_key.get_secret_value().encode(),
            settings.kafka_hmac_key_id,
            settings.kafka_topic_requests,
        )
    except KafkaSinkError as exc:
        notice("warning", "yellow", str(exc))


def _parse_sinks(value: str | None) -> set[str]:
    if not value:
        return set()
    sinks = {s.strip() for s in value.split(",") if s.strip()}
    unknown = sinks - {"s3", "postgres", "kafka"}
    if unknown:
        fail(f"--sink: unknown sink(s) {', '.join(sorted(unknown))}; known: s3, postgres, kafka")
    return sinks


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result, default=str))
        return
    validation = result.get("validation") or {}
    status = "[green]passed[/]" if validation.get("passed") else "[red]FAILED[/]"
    out.print(
        f"batch [bold]{result['batch_id']}[/]: {result['rows']:,} rows "
        f"({result['fraud_rows']:,} fraud) in {len(result['files'])} file(s), {result['seconds']:.1f} s"
    )
    out.print(f"  location     {result['location']}")
    out.print(f"  batch sha256 {result['batch_sha256']}")
    out.print(f"  validation   {status}" + (" (reused existing batch)" if result.get("reused") else ""))
    for failure in validation.get("failures", []):
        out.print(f"    - {failure.get('message', failure)}")
    for name, sink in result.get("sinks", {}).items():
        detail = f"{sink['rows_done']:,}/{sink['rows_total']:,} rows"
        state = (
            "[green]done[/]"
            if sink["state"] == "done"
            else f"[red]{sink['state']}[/] {sink.get('error') or ''}"
        )
        out.print(f"  {name:<12} {state} ({detail})")


@app.command()
def preview(
    rows: Annotated[int, typer.Option(help="transactions to show (1-10,000)")] = 20,
    seed: Annotated[int, typer.Option()] = 42,
    fraud_rate: Annotated[float | None, typer.Option(help="share of fraudulent rows, 0..1")] = None,
    scenarios: Annotated[str | None, typer.Option(help="mix, e.g. card_testing=2,phishing=1")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Generate a few transactions in-process (no Ray, nothing stored) and print them."""
    from fraudgen.simulate.engine import generate_table

    if not 1 <= rows <= 10_000:
        fail(f"--rows: must be between 1 and 10,000 for a preview (got {rows})")
    request = build_request(rows=rows, seed=seed, fraud_rate=fraud_rate, scenario_mix=parse_mix(scenarios))
    table = generate_table(request)
    if as_json:
        for record in table.to_pylist():
            sys.stdout.write(json.dumps(record, default=str) + "\n")
        return
    shown = ["timestamp", "user_id", "transaction_type", "channel", "amount", "currency", "merchant_category",
             "status", "country", "is_fraud", "fraud_scenario"]  # fmt: skip
    grid = Table(title=f"{rows} synthetic transactions (seed {seed})", header_style="bold")
    for name in shown:
        grid.add_column(name, overflow="fold")
    for record in table.select(shown).to_pylist():
        style = "red" if record["is_fraud"] else None
        cells = [record["timestamp"].strftime("%Y-%m-%d %H:%M:%S"), *(_cell(record[c]) for c in shown[1:])]
        grid.add_row(*cells, style=style)
    out.print(grid)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@app.command()
def validate(
    path: Annotated[str, typer.Argument(help="batch directory, Parquet file/dir or s3:// URI")],
    reference: Annotated[
        str | None, typer.Option(help="reference batch or Parquet to compare against")
    ] = None,
    report: Annotated[str | None, typer.Option(help="directory for report.json and report.html")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Validate a batch: schema, duplicates, statistics, business rules; exit 1 if a gate fails."""
    from fraudgen.validate.command import validate_command

    raise typer.Exit(validate_command(path, reference, report, as_json, load_settings(config)))


register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
