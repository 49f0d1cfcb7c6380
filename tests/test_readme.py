"""Every command the README shows exists and parses: `fraudgen …` lines through the real Typer app (without
running them), `curl` paths against the API's OpenAPI schema, `make` targets against the Makefile. What the
commands then do is exercised by the CLI, pipeline, sink, stream and API tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from fraudgen.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(prefix: str) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for raw in block.splitlines():
            line = raw.split("  #")[0].strip()
            if prefix in line:
                lines.append(line[line.index(prefix) :])
    return lines


FRAUDGEN = _commands("fraudgen ")


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("line", FRAUDGEN)
def test_every_fraudgen_command_in_the_readme_parses(line: str) -> None:
    tokens = shlex.split(line.replace("<", "").replace(">", ""))[1:]
    command: Any = typer.main.get_command(app)  # typer vendors click: walk its groups by duck typing
    parent = command.make_context("fraudgen", [], resilient_parsing=True)
    while hasattr(command, "get_command"):
        name, tokens = tokens[0], tokens[1:]
        command = command.get_command(parent, name)
        assert command is not None, f"{line}: no command {name!r}"
        if hasattr(command, "get_command"):
            parent = command.make_context(name, [], parent=parent, resilient_parsing=True)
    command.make_context(command.name, tokens, parent=parent)  # raises on an unknown option or bad value


def test_there_are_readme_commands_to_check() -> None:
    assert len(FRAUDGEN) >= 10


def test_every_curl_path_in_the_readme_is_an_api_route() -> None:
    from deployments.app import create_app
    from fraudgen.config import Settings

    routes = {getattr(r, "path", "") for r in create_app(Settings(output_uri="/tmp/readme-check")).routes}
    paths = [re.search(r"http://127\.0\.0\.1:8000(\S*)", c) for c in _commands("curl ")]
    assert paths and all(paths)
    for match in paths:
        path = match.group(1).rstrip("'\"")  # type: ignore[union-attr]
        path = re.sub(r"<[^>]+>", "{batch_id}", path)
        assert path in routes, path
