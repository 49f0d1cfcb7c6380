"""The HTTP bodies of the API (OpenAPI at /docs) and their mapping onto GenerationRequest.

The body says ``count`` where the library says ``rows``; every other generation field keeps the library's
name so that a notebook, the CLI and the API read the same. Limits are in the schema itself, so a client
sees them in /docs and a violation is a 422 naming the field and the limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraudgen.request import GenerationRequest

PREVIEW_MAX = 100
GENERATE_MAX = 100_000
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Sink = Literal["s3", "postgres", "kafka"]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=42, ge=0, lt=2**63, description="same seed and body ⇒ identical data")
    fraud_rate: float | None = Field(default=None, ge=0.0, le=1.0, description="share of fraud rows")
    scenario_mix: dict[str, float] | None = Field(
        default=None, description="relative weights, e.g. {'card_testing': 2, 'phishing': 1}"
    )
    start: datetime | None = Field(default=None, description="window start (ISO 8601, UTC if naive)")
    end: datetime | None = Field(default=None, description="window end, exclusive")
    users: int | None = Field(default=None, ge=1, le=1_000_000, description="population size")
    countries: list[str] | None = Field(default=None, min_length=1, max_length=64, description="ISO 3166")
    currency: str | None = Field(default=None, min_length=3, max_length=3, description="force one ISO 4217")
    tenant_id: str | None = Field(default=None, pattern=BATCH_ID_PATTERN)
    engine: Literal["rules", "llm"] = "rules"
    adapter: str | None = Field(
        default=None, pattern=BATCH_ID_PATTERN, description="LoRA adapter for engine=llm (tenant/scenario)"
    )


class PreviewBody(_Common):
    count: int = Field(default=10, ge=1, le=PREVIEW_MAX, description=f"transactions, 1–{PREVIEW_MAX}")


class GenerateBody(_Common):
    count: int = Field(ge=1, le=GENERATE_MAX, description=f"transactions, 1–{GENERATE_MAX:,}")
    batch_id: str | None = Field(default=None, pattern=BATCH_ID_PATTERN, description="default: request hash")
    format: Literal["parquet", "csv"] = "parquet"
    sinks: list[Sink] | None = Field(
        default=None, max_length=3, description="persistence sinks; default: every configured one"
    )
    allow_failed: bool = Field(default=False, description="publish even if validation gates fail")


def to_request(body: _Common, shard_rows: int = 250_000) -> GenerationRequest:
    """Build the library request; its own checks (window, scenarios, countries) become 422s on the body."""
    fields: dict[str, Any] = {
        "rows": body.count,  # type: ignore[attr-defined]
        "seed": body.seed,
        "fraud_rate": body.fraud_rate,
        "scenario_mix": body.scenario_mix,
        "start": body.start,
        "end": body.end,
        "users": body.users,
        "countries": body.countries,
        "currency": body.currency,
        "tenant_id": body.tenant_id,
        "engine": body.engine,
        "batch_id": getattr(body, "batch_id", None),
        "shard_rows": shard_rows,
    }
    try:
        return GenerationRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise RequestValidationError([_body_error(e) for e in exc.errors()]) from None


def _body_error(error: Any) -> dict[str, Any]:
    loc = list(error.get("loc") or ())
    if loc and loc[0] == "rows":
        loc[0] = "count"
    return {
        "loc": ["body", *loc],
        "msg": str(error.get("msg", "")).removeprefix("Value error, "),
        "type": error.get("type", "value_error"),
    }


# --- responses (documented in OpenAPI) ------------------------------------------------------------------


class ErrorBody(BaseModel):
    detail: Any
    message: str | None = None


class PreviewResponse(BaseModel):
    count: int
    seed: int
    engine: str
    fraud_rows: int
    transactions: list[dict[str, Any]]


class FileOut(BaseModel):
    path: str
    rows: int
    fraud_rows: int
    sha256: str
    bytes: int


class GenerateResponse(BaseModel):
    batch_id: str
    rows: int
    fraud_rows: int
    format: str
    location: str
    manifest_uri: str
    batch_sha256: str
    files: list[FileOut]
    validation: dict[str, Any] | None
    seconds: float
    reused: bool
    persistence: dict[str, str]
    status_url: str


class SinkStatus(BaseModel):
    state: str
    rows: int | None = None
    detail: str | None = None


class BatchStatus(BaseModel):
    batch_id: str
    state: str
    rows: int | None
    fraud_rows: int | None
    batch_sha256: str | None
    location: str | None
    sinks: dict[str, SinkStatus]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
    failing: list[str] = Field(default_factory=list)
