"""Property-based run over the OpenAPI schema (schemathesis, against create_app through ASGI): whatever
the body, no endpoint answers 5xx. Bounded: few examples per operation, small generate limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from deployments.app import create_app
from fraudgen.config import Settings


def _app(tmp: Path) -> object:
    # a low generate cap keeps generated bodies cheap: bigger counts must answer 413, not run
    return create_app(
        Settings(output_uri=str(tmp / "out"), api_generate_max_count=1500, rate_limit_per_minute=100_000)
    )


_tmp = Path(__import__("tempfile").mkdtemp(prefix="fraudgen-schema-"))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_tmp))


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
