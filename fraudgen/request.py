"""What a user asks for: one validated generation request, shared by the CLI, the API and the pipeline.

Every limit is checked here so that each entry point rejects bad input with the same message naming the
field and the limit. The request is also the determinism key: same request ⇒ byte-identical data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fraudgen.schema import SCENARIOS

MAX_ROWS = 100_000_000_000
DEFAULT_FRAUD_RATE = 0.01
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_END = datetime(2026, 2, 1, tzinfo=UTC)
MAX_WINDOW_DAYS = 3660

#: Default scenario mix (relative weights). Card testing and laundering dominate real alert queues; the
#: rarer, higher-value scenarios still get enough cases per 100k rows for a detector to learn them.
DEFAULT_SCENARIO_MIX: dict[str, float] = {
    "card_testing": 0.25,
    "account_takeover": 0.15,
    "identity_theft": 0.10,
    "merchant_fraud": 0.10,
    "money_laundering": 0.15,
    "phishing": 0.10,
    "chargeback_fraud": 0.15,
}

BatchId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class GenerationRequest(BaseModel):
    """A generation request. Field names are the API body's and the CLI flags' names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=1, le=MAX_ROWS, description="number of transactions to generate")
    seed: int = Field(default=42, ge=0, lt=2**63)
    batch_id: BatchId | None = Field(default=None, description="defaults to a hash of the request")
    tenant_id: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    fraud_rate: float = Field(default=DEFAULT_FRAUD_RATE, ge=0.0, le=1.0)
    scenario_mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SCENARIO_MIX))
    start: datetime = DEFAULT_START
    end: datetime = DEFAULT_END
    users: int | None = Field(default=None, ge=1, le=500_000_000, description="population size")
    countries: list[str] | None = Field(default=None, min_length=1, max_length=64)
    currency: str | None = Field(default=None, description="force one ISO 4217 currency for every row")
    engine: Literal["rules", "llm"] = "rules"
    shard_rows: int = Field(default=250_000, ge=100, le=5_000_000)

    @field_validator("scenario_mix")
    @classmethod
    def _known_scenarios(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        for name, weight in mix.items():
            if not (weight >= 0.0) or weight == float("inf"):
                raise ValueError(f"weight of {name} must be a finite number >= 0, got {weight}")
        if mix and sum(mix.values()) <= 0:
            raise ValueError("at least one scenario weight must be > 0")
        return dict(sorted(mix.items(), key=lambda kv: SCENARIOS.index(kv[0])))

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, countries: list[str] | None) -> list[str] | None:
        if countries is None:
            return None
        from fraudgen.world import COUNTRY_CODES

        upper = [c.upper() for c in countries]
        unknown = sorted(set(upper) - set(COUNTRY_CODES))
        if unknown:
            supported = ", ".join(COUNTRY_CODES)
            raise ValueError(f"unsupported country code(s) {', '.join(unknown)}; supported: {supported}")
        return list(dict.fromkeys(upper))

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, currency: str | None) -> str | None:
        if currency is None:
            return None
        from fraudgen.world import CURRENCY_CODES

        if currency.upper() not in CURRENCY_CODES:
            raise ValueError(f"unsupported currency {currency!r}; supported: {', '.join(CURRENCY_CODES)}")
        return currency.upper()

    @model_validator(mode="after")
    def _window(self) -> GenerationRequest:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        if (self.end - self.start).days > MAX_WINDOW_DAYS:
            raise ValueError(f"time window longer than the limit of {MAX_WINDOW_DAYS} days")
        if self.fraud_rate > 0 and not self.scenario_mix:
            raise ValueError("scenario_mix is empty but fraud_rate > 0")
        return self

    # --- derived values -----------------------------------------------------------------------------
    @property
    def resolved_batch_id(self) -> str:
        return self.batch_id or f"b{self.fingerprint()[:16]}"

    @property
    def population(self) -> int:
        """Users in the synthetic world: ~60 transactions each over the window unless asked otherwise."""
        return self.users if self.users is not None else min(max(50, self.rows // 60), 500_000_000)

    def fingerprint(self) -> str:
        """SHA256 of the canonical request (batch id excluded): the identity of the data it produces."""
        body = self.model_dump(mode="json", exclude={"batch_id"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def normalised_mix(self) -> dict[str, float]:
        total = sum(self.scenario_mix.values())
        return {name: w / total for name, w in self.scenario_mix.items() if w > 0} if total > 0 else {}


def parse_scenario_mix(text: str) -> dict[str, float]:
    """Parse the CLI form ``card_testing=2,phishing=1`` (a bare name means weight 1)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in SCENARIOS:
            raise ValueError(f"--scenarios: unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError as exc:
            raise ValueError(f"--scenarios: weight of {name} must be a number, got {weight!r}") from exc
    if not mix:
        raise ValueError("--scenarios: give at least one scenario, e.g. card_testing=2,phishing=1")
    return mix
