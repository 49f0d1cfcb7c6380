"""Ray Serve deployments: the FastAPI ingress (auth, limits, metrics) and the generator it calls.

Why two deployments: the ingress is light and I/O bound (many cheap replicas, autoscaled on ongoing
requests), generation is CPU (rules) or GPU (LLM) bound and scales on its own resources. Rule previews
(≤100 rows, ~4 ms) run in the ingress replica itself, which saves a hop on the hot path; every generate,
every LLM call, status and idempotency records go through the generator's DeploymentHandle.

Settings: non-secret values travel as deployment arguments (``serve_config.yaml`` ``args``, or the
overrides ``build_application`` derives from a Settings object); secrets (Postgres DSN, Kafka HMAC key)
never do: replicas read them from their environment (``runtime_env.env_vars`` or the pod's env).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.auth import ensure_bind_allowed
from deployments.generator import GeneratorService, Outcome
from fraudgen.config import Settings

#: Local defaults (one laptop, 2 CPUs shared with Ray Data): fractional CPUs, small autoscaling ranges.
LOCAL_INGRESS_AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8}
LOCAL_GENERATOR_AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}


@serve.deployment(
    name="generator",
    ray_actor_options={"num_cpus": 0.25},
    autoscaling_config=LOCAL_GENERATOR_AUTOSCALING,
    max_ongoing_requests=4,
    health_check_period_s=10,
)
class Generator:
    """Generation, export, status and idempotency records; loads the LLM model once per replica."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.service = GeneratorService(Settings(**(settings or {})))

    def preview(self, request_json: str, adapter: str | None) -> Outcome:
        return self.service.preview(request_json, adapter)

    def generate(
        self, request_json: str, fmt: str, sinks: list[str] | None, allow_failed: bool, audit: dict[str, Any]
    ) -> Outcome:
        return self.service.generate(request_json, fmt, sinks, allow_failed, audit)

    def batch_status(self, batch_id: str) -> Outcome:
        return self.service.batch_status(batch_id)

    def ready(self) -> dict[str, str]:
        return self.service.ready()

    def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None:
        return self.service.idempotency_lookup(key_id)

    def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None:
        self.service.idempotency_store(key_id, body_sha256, outcome)


class HandleBackend:
    """The app's Backend over the generator deployment (rule previews stay in the ingress process)."""

    def __init__(self, handle: DeploymentHandle, local: GeneratorService) -> None:
        self.handle = handle
        self.local = local

    async def preview(self, request_json: str, adapter: str | None) -> Outcome:
        if orjson.loads(request_json).get("engine", "rules") == "rules":
            import anyio

            return await anyio.to_thread.run_sync(self.local.preview, request_json, adapter)
        return await self.handle.preview.remote(request_json, adapter)

    async def generate(
        self, request_json: str, fmt: str, sinks: list[str] | None, allow_failed: bool, audit: dict[str, Any]
    ) -> Outcome:
        return await self.handle.generate.remote(request_json, fmt, sinks, allow_failed, audit)

    async def batch_status(self, batch_id: str) -> Outcome:
        return await self.handle.batch_status.remote(batch_id)

    async def ready(self) -> dict[str, str]:
        import asyncio

        try:
            checks = await asyncio.wait_for(self.handle.ready.remote(), timeout=10)
        except Exception as exc:  # the generator not answering is itself the unready dependency
            return {"generator": f"not responding: {type(exc).__name__}"}
        return {"generator": "ok", **checks}

    async def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None:
        return await self.handle.idempotency_lookup.remote(key_id)

    async def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None:
        await self.handle.idempotency_store.remote(key_id, body_sha256, outcome)


def serve_http_host() -> str | None:
    """The address Serve's HTTP proxies bind (from the controller), or None if it cannot be read."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        return None if client is None else str(client.http_config.host)
    except Exception:
        return None


@serve.deployment(
    name="ingress",
    ray_actor_options={"num_cpus": 0.1},
    autoscaling_config=LOCAL_INGRESS_AUTOSCALING,
    max_ongoing_requests=64,
)
@serve.ingress()
class Ingress:
    """FastAPI ingress; refuses to start unauthenticated when Serve listens off loopback."""

    def __init__(self, generator: DeploymentHandle, settings: dict[str, Any] | None = None) -> None:
        self.settings = Settings(**(settings or {}))
        ensure_bind_allowed(self.settings.api_host, self.settings)
        http_host = serve_http_host()
        if http_host is not None:
            ensure_bind_allowed(http_host, self.settings)
        self.generator = generator

    async def __serve_build_asgi_app__(self) -> Any:
        from deployments.app import create_app
        from deployments.metrics import RayState

        local = GeneratorService(self.settings.model_copy(update={"api_llm_model_dir": None}))
        state = RayState(self.settings.api_state_actor, self.settings.rate_limit_per_minute)
        return create_app(self.settings, HandleBackend(self.generator, local), state)


def settings_overrides(settings: Settings) -> dict[str, Any]:
    """Every non-secret, non-None setting as JSON values (secrets stay in the replicas' environment)."""
    dumped = settings.model_dump(mode="json")
    return {
        k: v for k, v in dumped.items() if v is not None and not isinstance(getattr(settings, k), SecretStr)
    }


def build_application(
    settings: Settings,
    ingress_replicas: int | None = None,
    generator_replicas: int | None = None,
    ingress_options: dict[str, Any] | None = None,
    generator_options: dict[str, Any] | None = None,
) -> Any:
    """The bound application. A fixed replica count replaces autoscaling (tests: two ingress replicas)."""
    overrides = settings_overrides(settings)
    ingress = Ingress.options(**(ingress_options or {}))  # type: ignore[attr-defined]
    generator = Generator.options(**(generator_options or {}))  # type: ignore[attr-defined]
    if ingress_replicas is not None:
        ingress = ingress.options(num_replicas=ingress_replicas, autoscaling_config=None)
    if generator_replicas is not None:
        generator = generator.options(num_replicas=generator_replicas, autoscaling_config=None)
    return ingress.bind(generator.bind(overrides), overrides)


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run serve_config.yaml`` / ``serve deploy``.

    ``args`` are Settings field names (without the FRAUDGEN_ prefix), e.g. ``output_uri``; the rest comes
    from the FRAUDGEN_* environment of the replicas. Deployment sizes come from serve_config.yaml.
    """
    settings = Settings(**(args or {}))
    return build_application(settings)
