"""Gate thresholds and the validation verdict.

Defaults are set for real generated data: structural checks (schema, rules, duplicates, memorised rows)
tolerate nothing, because the rule engine never produces a violation; statistical gates fail only when a
difference is both significant (p below ``ks_alpha``) and large (KS statistic above
``max_ks_statistic``), so big batches do not fail on differences too small to matter.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_schema_errors: int = Field(
        default=0, ge=0, description="rows failing a schema check, plus bad columns"
    )
    max_duplicate_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="duplicate signatures / rows")
    remove_duplicates: bool = Field(
        default=False, description="duplicates are dropped by the stage, not failed"
    )
    max_known_signature_rows: int = Field(default=0, ge=0, description="rows already in earlier batches")
    max_signature_mismatch_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="on the sampled rows")
    max_rule_violations: int = Field(default=0, ge=0)
    max_ks_statistic: float = Field(default=0.25, gt=0.0, le=1.0)
    ks_alpha: float = Field(default=1e-3, gt=0.0, lt=1.0)
    min_test_rows: int = Field(default=30, ge=5, description="smaller samples are reported, not gated")
    min_fidelity: float = Field(default=0.85, ge=0.0, le=1.0)
    fraud_rate_tolerance: float = Field(default=0.25, ge=0.0, description="relative, plus 3 binomial sd")
    max_mix_tv: float = Field(default=0.10, ge=0.0, le=1.0, description="TV distance of the scenario mix")
    max_memorised_rows: int = Field(default=0, ge=0)
    max_close_to_training_share: float = Field(default=0.10, ge=0.0, le=1.0)
    sample_size: int = Field(default=20_000, ge=500, le=1_000_000)
    reference_rows: int = Field(default=100_000, ge=5_000, le=5_000_000)
    reference_seed: int = Field(default=7919, ge=0)

    @classmethod
    def from_settings(cls, settings: Any) -> GateConfig:
        """Read ``validation_<field>`` attributes of the settings object (FRAUDGEN_VALIDATION_<FIELD>)."""
        values = {}
        for name in cls.model_fields:
            value = getattr(settings, f"validation_{name}", None)
            if value is not None:
                values[name] = value
        return cls(**values)


class GateFailure(BaseModel):
    gate: str
    figure: float
    limit: float
    message: str


class ValidationReport(BaseModel):
    """The verdict with every figure behind it; serialised as report.json and rendered as report.html."""

    passed: bool
    rows: int
    failures: list[GateFailure] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)  # check name → count, examples
    column_errors: dict[str, str] = Field(default_factory=dict)
    dedup: dict[str, Any] = Field(default_factory=dict)
    statistics: list[dict[str, Any]] = Field(default_factory=list)
    fidelity: dict[str, float] = Field(default_factory=dict)
    memorisation: dict[str, Any] = Field(default_factory=dict)
    gates: GateConfig = Field(default_factory=GateConfig)
    reference: str = "none"

    def to_json(self) -> str:
        return json.dumps(
            self.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False, default=str
        )

    def failure_lines(self) -> list[str]:
        return [f"FAIL {f.gate}: {f.message} (figure {f.figure:g}, limit {f.limit:g})" for f in self.failures]


def fail(failures: list[GateFailure], gate: str, figure: float, limit: float, message: str) -> None:
    failures.append(GateFailure(gate=gate, figure=float(figure), limit=float(limit), message=message))
