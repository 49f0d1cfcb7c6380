"""The ``fraudgen`` commands that run or talk to services: persist, db, kafka, dev, stream, llm, serve."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from fraudgen.cli_common import (
    ConfigOption,
    console,
    describe_validation_error,
    fail,
    load_settings,
    parse_mix,
)


def persist(
    batch_id: Annotated[str, typer.Option(help="the written batch to persist or resume")],
    out_uri: Annotated[str | None, typer.Option("--out", help="where the batch was written")] = None,
    sink: Annotated[str | None, typer.Option(help="postgres,kafka (default: every configured sink)")] = None,
    config: ConfigOption = None,
) -> None:
    """Resume Postgres/Kafka persistence of a written batch: no row lost, none duplicated."""
    from fraudgen.sinks.persist import persist_command

    raise typer.Exit(persist_command(batch_id, out_uri, sink, load_settings(config)))


db_app = typer.Typer(help="Postgres schema management.", no_args_is_help=True)
kafka_app = typer.Typer(help="Kafka helpers.", no_args_is_help=True)
dev_app = typer.Typer(
    help="Local real services for trying the full flow without Docker.", no_args_is_help=True
)


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Apply the versioned SQL migrations (tables, WORM audit trigger, statistics view)."""
    from fraudgen.sinks.persist import db_migrate_command

    raise typer.Exit(db_migrate_command(load_settings(config)))


@kafka_app.command("consume")
def kafka_consume(
    verify: Annotated[
        bool, typer.Option("--verify", help="check HMAC signatures; reject bad messages")
    ] = False,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="stop after N messages")] = None,
    config: ConfigOption = None,
) -> None:
    """Read synthetic_tx_events as JSON lines; with --verify, tampered or unsigned messages are rejected."""
    from fraudgen.sinks.kafka_verify import kafka_consume_command

    raise typer.Exit(kafka_consume_command(verify, max_messages, load_settings(config)))


@dev_app.command("up")
def dev_up(
    services: Annotated[str, typer.Option(help="comma-separated: postgres,kafka,s3")] = "postgres,kafka,s3",
    migrate: Annotated[bool, typer.Option(help="apply the Postgres migrations")] = True,
) -> None:
    """Start real Postgres, Kafka and S3 servers on loopback; print the exports; Ctrl-C stops them."""
    from fraudgen.devservices import dev_up_command

    raise typer.Exit(dev_up_command(services, migrate=migrate))


def stream(
    rate: Annotated[float, typer.Option(help="average transactions per second")] = 1_000.0,
    duration: Annotated[float | None, typer.Option(help="stop after S seconds")] = None,
    rows: Annotated[int | None, typer.Option(help="stop after N transactions")] = None,
    speedup: Annotated[
        float | None, typer.Option(help="event-time pacing: event seconds per wall second")
    ] = None,
    scenarios: Annotated[str | None, typer.Option(help="mix, e.g. card_testing=2,phishing=1")] = None,
    fraud_rate: Annotated[float | None, typer.Option(help="share of fraudulent rows, 0..1")] = None,
    seed: Annotated[int, typer.Option(help="same seed ⇒ same sequence of events")] = 42,
    sink: Annotated[str, typer.Option(help="stdout or kafka")] = "stdout",
    actors: Annotated[
        int, typer.Option(min=0, max=256, help="Ray actors generating in parallel (0: none)")
    ] = 0,
    users: Annotated[int | None, typer.Option(help="population size")] = None,
    stream_id: Annotated[str, typer.Option(help="id carried as batch_id by every event")] = "stream",
    config: ConfigOption = None,
) -> None:
    """Emit an endless (or bounded) paced stream in timestamp order; SIGINT/SIGTERM stop it cleanly."""
    from fraudgen.stream import KafkaSink, StdoutSink, Stream, StreamConfig, install_signal_handlers

    settings = load_settings(config)
    if sink not in ("stdout", "kafka"):
        fail(f"--sink: must be stdout or kafka (got {sink!r})")
    fields: dict[str, Any] = {"rate": rate, "duration_s": duration, "rows": rows, "speedup": speedup,
                              "seed": seed, "stream_id": stream_id, "fraud_rate": fraud_rate,
                              "scenario_mix": parse_mix(scenarios), "users": users}  # fmt: skip
    try:
        cfg = StreamConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        fail(
            describe_validation_error(exc)
            .replace("duration_s", "--duration")
            .replace("stream_id", "--stream-id")
        )
    try:
        sys.stdout.flush()
        stdout = StdoutSink(fd=sys.stdout.fileno())
        target = KafkaSink(settings, cfg.stream_id) if sink == "kafka" else stdout
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    source = None
    if actors:
        from fraudgen.stream import ray_source

        source = ray_source(cfg, actors)
    runner = Stream(cfg, target, source)
    install_signal_handlers(runner)
    live = console.is_terminal

    def progress(stats: Any) -> None:
        s = stats.summary()
        line = (f"sent {s['sent']:,}  rate {s['achieved_rate']:,.0f}/s (target {runner.rate:,.0f})  "
                f"lag {s['lag_s']:.2f}s  fraud {100 * s['fraud_share']:.2f}%")  # fmt: skip
        console.print(line, end="\r" if live else "\n", highlight=False)

    try:
        stats = runner.run(progress=progress)
    except Exception as exc:  # a sink that failed mid-stream: say how far it got
        console.print_json(json.dumps(runner.stats.summary()))
        fail(f"stream stopped: {exc}", code=1)
    console.print_json(json.dumps(stats.summary()))


llm_app = typer.Typer(help="The LLM engine: train a model, sample from it.", no_args_is_help=True)


@llm_app.command("train")
def llm_train(
    data: Annotated[str, typer.Option(help="Parquet file or batch directory of reference transactions")],
    out_dir: Annotated[str, typer.Option("--out", help="model directory to write")],
    base: Annotated[
        str, typer.Option(help="scratch, a fraudgen model dir, or a local HF causal LM dir")
    ] = "scratch",
    lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter instead of all weights")] = False,
    load_4bit: Annotated[bool, typer.Option("--load-4bit", help="NF4 4-bit base (CUDA, QLoRA)")] = False,
    config: ConfigOption = None,
) -> None:
    """Train the row model locally (nothing is downloaded)."""
    from fraudgen.llm.command import llm_train_command

    raise typer.Exit(llm_train_command(data, out_dir, base, lora, load_4bit, load_settings(config)))


@llm_app.command("sample")
def llm_sample(
    model: Annotated[str, typer.Option(help="trained model directory")],
    rows: Annotated[int, typer.Option(help="transactions to sample")] = 1_000,
    seed: Annotated[int, typer.Option()] = 42,
    out_dir: Annotated[str | None, typer.Option("--out", help="write Parquet here")] = None,
    config: ConfigOption = None,
) -> None:
    """Sample transactions from a model; prints validity, fallbacks and privacy figures as JSON."""
    from fraudgen.llm.command import llm_sample_command

    raise typer.Exit(llm_sample_command(model, rows, seed, out_dir, load_settings(config)))


def serve(
    host: Annotated[str, typer.Option(help="bind address (non-loopback needs auth)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP API on Ray Serve (embedded local Ray unless RAY_ADDRESS is set)."""
    from deployments.command import serve_command

    raise typer.Exit(serve_command(host, port, load_settings(config)))


def register(app: typer.Typer) -> None:
    """Add these commands to the ``fraudgen`` app."""
    for command in (persist, stream, serve):
        app.command()(command)
    app.add_typer(db_app, name="db")
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(dev_app, name="dev")
    app.add_typer(llm_app, name="llm")
