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

    # --- API ------------------------------------------------------------------------------------------
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    api_keys_file: Path | None = None
    rate_limit_per_minute: int = Field(default=100, ge=1)

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
