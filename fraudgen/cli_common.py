"""What every ``fraudgen`` command shares: consoles, the --config option, and errors that name the flag.

Exit codes of every command: 0 ok, 1 a gate or check failed, 2 usage or input error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from fraudgen.config import Settings, get_settings
from fraudgen.request import GenerationRequest, parse_scenario_mix

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 200)

#: request field → CLI flag, so errors name what the user typed
FLAG_OF_FIELD = {
    "rows": "--rows",
    "seed": "--seed",
    "batch_id": "--batch-id",
    "fraud_rate": "--fraud-rate",
    "scenario_mix": "--scenarios",
    "start": "--start",
    "end": "--end",
    "users": "--users",
    "countries": "--countries",
    "currency": "--currency",
    "tenant_id": "--tenant",
    "shard_rows": "--shard-rows",
    "rate": "--rate",
    "duration_s": "--duration",
    "speedup": "--speedup",
    "stream_id": "--stream-id",
}

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="settings file (.json/.toml/.yaml); environment wins over it")
]


def notice(label: str, style: str, message: str) -> None:
    """``label: message`` on stderr as one unwrapped line, the message never read as rich markup.

    Rich would otherwise wrap at the terminal width (80 columns when stderr is a pipe), splitting a long
    path or "is not writable" across lines for anyone who greps the output, and would swallow ``[...]`` in
    a message as markup."""
    console.print(Text.assemble((f"{label}:", style), " ", message), soft_wrap=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    notice("error", "bold red", message)
    raise typer.Exit(code)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``--flag: what is wrong (got value)``."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "request"
        flag = FLAG_OF_FIELD.get(field, field)
        message = str(error["msg"]).removeprefix("Value error, ")
        got = error.get("input")
        suffix = (
            f" (got {got!r})" if got is not None and not isinstance(got, dict) and field != "request" else ""
        )
        lines.append(f"{flag}: {message}{suffix}")
    return "; ".join(lines)


def load_settings(config: Path | None) -> Settings:
    try:
        return get_settings(config)
    except (ValidationError, ValueError) as exc:
        fail(f"--config: {exc}")


def build_request(**fields: Any) -> GenerationRequest:
    try:
        return GenerationRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        fail(describe_validation_error(exc))


def parse_time(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{flag}: not an ISO 8601 date or datetime (got {value!r})")


def parse_mix(value: str | None) -> dict[str, float] | None:
    if value is None:
        return None
    try:
        return parse_scenario_mix(value)
    except ValueError as exc:
        fail(str(exc))
