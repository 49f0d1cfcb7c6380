"""One settings object for every knob (pydantic-settings, environment prefix ``FRAUDGEN_``).

Precedence: explicit keyword arguments, then environment variables, then an optional TOML/JSON/YAML config
file given with ``--config`` (or ``FRAUDGEN_CONFIG_FILE``), then the defaults below. The ``FRAUDGEN_*``
names are a public contract (DESIGN.md): extend, never rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUDGEN_", extra="ignore", validate_default=True)

    # --- generation ---------------------------------------------------------------------------------
    output_uri: str = Field(default="./out", description="Local directory or s3://bucket/prefix")
    tenant_id: str = "default"
    shard_rows: int = Field(default=250_000, ge=1_000, le=5_000_000, description="Rows per shard/file")
    default_workers: int = Field(default=0, ge=0, description="0 = one per available CPU")
    parquet_compression: str = "snappy"

    # --- services (a sink is used only when its setting is present or asked for) ---------------------
    postgres_dsn: SecretStr | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_hmac_key: SecretStr | None = None
    kafka_hmac_key_id: str = "k1"
    kafka_topic_events: str = "synthetic_tx_events"
    kafka_topic_requests: str = "synthetic_generate_requests"
    persist_pool_size: int = Field(default=2, ge=1, le=64)

    # --- sinks: persistence (postgres/kafka actors, retries) --------------------------------------------
    kafka_partitions: int = Field(default=6, ge=1, le=1000, description="partitions of topics we create")
    kafka_message_timeout_ms: int = Field(
        default=120_000, ge=1_000, description="give up on a delivery after"
    )
    kafka_rate_limit_per_second: int | None = Field(
        default=None, ge=1, description="pace publishing (load tests of a decision engine); None = max speed"
    )
    persist_retry_attempts: int = Field(
        default=5, ge=1, le=50, description="tries per file for transient errors"
    )
    persist_retry_max_wait_s: float = Field(default=10.0, gt=0, description="cap of the exponential backoff")

    # --- validation gates (fraudgen/validate; None = GateConfig default) ----------------------------------
    validation_max_schema_errors: int | None = Field(default=None, ge=0)
    validation_max_duplicate_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    validation_remove_duplicates: bool | None = None
    validation_max_signature_mismatch_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    validation_max_rule_violations: int | None = Field(default=None, ge=0)
    validation_max_ks_statistic: float | None = Field(default=None, gt=0.0, le=1.0)
    validation_ks_alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    validation_min_fidelity: float | None = Field(default=None, ge=0.0, le=1.0)
    validation_fraud_rate_tolerance: float | None = Field(default=None, ge=0.0)
    validation_max_mix_tv: float | None = Field(default=None, ge=0.0, le=1.0)
    validation_max_memorised_rows: int | None = Field(default=None, ge=0)
    validation_sample_size: int | None = Field(default=None, ge=500, le=1_000_000)
    validation_reference_rows: int | None = Field(default=None, ge=5_000, le=5_000_000)

    # --- LLM engine (fraudgen/llm) -------------------------------------------------------------------
    llm_model_dir: str | None = Field(default=None, description="fraudgen model directory for engine=llm")
    llm_adapter: str | None = Field(default=None, description="LoRA adapter name under <model>/adapters")
    llm_device: str | None = Field(default=None, description="cpu | cuda[:N]; default cuda if available")
    llm_torch_threads: int = Field(default=1, ge=0, le=256, description="torch CPU threads (0: default)")
    llm_train_steps: int = Field(default=600, ge=1, le=10_000_000)
    llm_train_max_seconds: float | None = Field(default=None, gt=0, description="stop training after this")
    llm_sample_batch: int = Field(default=512, ge=1, le=65_536, description="lines per sampling batch")
    llm_pseudonym_key: SecretStr | None = Field(
        default=None, description="HMAC key for training-data ids (random per run when unset)"
    )
    # LLM Serve deployment (deployments/llm_deployment.py): request batching, retries on replica loss
    llm_serve_batch_size: int = Field(default=8, ge=1, le=256, description="@serve.batch max_batch_size")
    llm_serve_batch_wait_s: float = Field(default=0.01, ge=0.0, le=10.0, description="batch_wait_timeout_s")
    llm_request_timeout_s: float = Field(
        default=300.0, gt=0, le=3600, description="ingress gives up on an LLM call after (503)"
    )
    llm_request_retries: int = Field(
        default=2, ge=0, le=10, description="retries of an LLM call whose replica died"
    )

    # --- API ------------------------------------------------------------------------------------------
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    api_keys_file: Path | None = None
    rate_limit_per_minute: int = Field(default=100, ge=1)
    # API server (deployments/): bind address, limits, cluster-wide state actor
    api_host: str = Field(default="127.0.0.1", description="address the HTTP server binds")
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="request body size limit")
    api_generate_max_count: int = Field(
        default=100_000, ge=1, le=100_000, description="may lower the API cap"
    )
    api_state_actor: str = Field(
        default="fraudgen-api-state", description="named detached Ray actor holding cluster-wide metrics"
    )
    api_jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    api_jwt_leeway_s: int = Field(default=30, ge=0, le=600)
    api_llm_model_dir: Path | None = Field(default=None, description="model directory for engine=llm")

    # --- config file ------------------------------------------------------------------------------------
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls), file_secret_settings)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads ``FRAUDGEN_CONFIG_FILE`` (JSON, TOML or YAML); keys are the field names without the prefix."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FRAUDGEN_CONFIG_FILE")
        if not path:
            return {}
        return load_config_file(Path(path))


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(text)
    elif suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif suffix in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text)
    else:
        raise ValueError(f"config file {path}: unsupported extension {suffix!r} (use .json, .toml or .yaml)")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: top level must be a mapping")
    return {str(k).lower().removeprefix("fraudgen_"): v for k, v in data.items()}


def get_settings(config_file: Path | None = None) -> Settings:
    """Build the settings; ``config_file`` wins over FRAUDGEN_CONFIG_FILE but not over the environment."""
    if config_file is not None:
        os.environ["FRAUDGEN_CONFIG_FILE"] = str(config_file)
    return Settings()
