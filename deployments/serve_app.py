"""Ray Serve deployments: the FastAPI ingress (auth, limits, metrics) and the generator it calls.

Why two deployments: the ingress is light and I/O bound (many cheap replicas, autoscaled on ongoing
requests), generation is CPU (rules) or GPU (LLM) bound and scales on its own resources. Rule previews
(≤100 rows, ~4 ms) run in the ingress replica itself, which saves a hop on the hot path; every generate,
status and idempotency records go through the generator's DeploymentHandle. When an LLM model directory
is configured, a third deployment (``llm``, deployments/llm_deployment.py) serves ``engine="llm"``:
previews come straight from it; a generate gets its rows from it, then the generator exports them like
rule batches (parts, gates, manifest, persistence).

Settings: non-secret values travel as deployment arguments (``serve_config.yaml`` ``args``, or the
overrides ``build_application`` derives from a Settings object); secrets (Postgres DSN, Kafka HMAC key)
never do: replicas read them from their environment (``runtime_env.env_vars`` or the pod's env).
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.auth import ensure_bind_allowed
from deployments.generator import (
    GenerateCall,
    GeneratorService,
    Outcome,
    resolve_llm_model_dir,
    without_llm_model,
)
from deployments.llm_deployment import LlmGenerator, call_llm, llm_ready, request_engine
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
        self, call: GenerateCall, llm_rows: Any = None, llm_report: dict[str, Any] | None = None
    ) -> Outcome:
        return self.service.generate(call, llm_rows, llm_report)

    def batch_status(self, batch_id: str) -> Outcome:
        return self.service.batch_status(batch_id)

    def ready(self) -> dict[str, str]:
        return self.service.ready()

    def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None:
        return self.service.idempotency_lookup(key_id)

    def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None:
        self.service.idempotency_store(key_id, body_sha256, outcome)


class HandleBackend:
    """The app's Backend over the generator deployment (rule previews stay in the ingress process) and,
    when one is bound, the LLM deployment for ``engine="llm"``."""

    def __init__(
        self,
        handle: DeploymentHandle,
        local: GeneratorService,
        llm: DeploymentHandle | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.handle = handle
        self.local = local
        self.llm = llm
        self.settings = settings or local.settings

    def _adapter(self, adapter: str | None) -> str | None:
        return adapter or self.settings.llm_adapter

    async def preview(self, request_json: str, adapter: str | None) -> Outcome:
        engine = request_engine(request_json)
        if engine == "rules":
            import anyio

            return await anyio.to_thread.run_sync(self.local.preview, request_json, adapter)
        if self.llm is not None:
            return await call_llm(self.llm, "preview", request_json, self._adapter(adapter), self.settings)
        return await self.handle.preview.remote(request_json, adapter)

    async def generate(self, call: GenerateCall) -> Outcome:
        if self.llm is not None and request_engine(call.request_json) == "llm":
            chosen = self.local.resolve_sinks(call.sinks)  # a client error is answered before any sampling
            if isinstance(chosen, Outcome):
                return chosen
            adapter = self._adapter(call.adapter)
            rows = await call_llm(self.llm, "rows", call.request_json, adapter, self.settings)
            if rows.status != 200:
                return rows
            return await self.handle.generate.remote(call, rows.body["table"], rows.body["llm"])
        return await self.handle.generate.remote(call)

    async def batch_status(self, batch_id: str) -> Outcome:
        return await self.handle.batch_status.remote(batch_id)

    async def ready(self) -> dict[str, str]:
        import asyncio

        try:
            checks = await asyncio.wait_for(self.handle.ready.remote(), timeout=10)
        except Exception as exc:  # the generator not answering is itself the unready dependency
            checks, generator = {}, f"not responding: {type(exc).__name__}"
        else:
            generator = "ok"
        if self.llm is not None:
            checks["llm_model"] = await llm_ready(self.llm)
        return {"generator": generator, **checks}

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

    def __init__(
        self,
        generator: DeploymentHandle,
        settings: dict[str, Any] | None = None,
        llm: DeploymentHandle | None = None,
    ) -> None:
        self.settings = Settings(**(settings or {}))
        ensure_bind_allowed(self.settings.api_host, self.settings)
        http_host = serve_http_host()
        if http_host is not None:
            ensure_bind_allowed(http_host, self.settings)
        self.generator = generator
        # the LLM deployment is always bound by build_app (so serve_config.yaml can size it) but used only
        # when a model is configured; otherwise engine=llm answers 503 naming the settings to set
        self.llm = llm if resolve_llm_model_dir(self.settings) is not None else None

    async def __serve_build_asgi_app__(self) -> Any:
        from deployments.app import create_app
        from deployments.metrics import RayState

        local = GeneratorService(without_llm_model(self.settings))
        state = RayState(self.settings.api_state_actor, self.settings.rate_limit_per_minute)
        return create_app(self.settings, HandleBackend(self.generator, local, self.llm, self.settings), state)


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
    llm_replicas: int | None = None,
    llm_options: dict[str, Any] | None = None,
    bind_llm: bool | None = None,
) -> Any:
    """The bound application. A fixed replica count replaces autoscaling (tests: two ingress replicas).

    The ``llm`` deployment is bound when an LLM model directory is configured (``bind_llm=None``), or
    always/never when ``bind_llm`` says so. With it bound, the generator never loads the model itself.
    """
    overrides = settings_overrides(settings)
    with_llm = resolve_llm_model_dir(settings) is not None if bind_llm is None else bind_llm
    ingress = Ingress.options(**(ingress_options or {}))  # type: ignore[attr-defined]
    generator = Generator.options(**(generator_options or {}))  # type: ignore[attr-defined]
    if ingress_replicas is not None:
        ingress = ingress.options(num_replicas=ingress_replicas, autoscaling_config=None)
    if generator_replicas is not None:
        generator = generator.options(num_replicas=generator_replicas, autoscaling_config=None)
    if not with_llm:
        return ingress.bind(generator.bind(overrides), overrides)
    llm = LlmGenerator.options(**(llm_options or {}))  # type: ignore[attr-defined]
    if llm_replicas is not None:
        llm = llm.options(num_replicas=llm_replicas, autoscaling_config=None)
    # explicit Nones: they must beat a FRAUDGEN_*LLM_MODEL_DIR in the replicas' environment
    generator_overrides = {**overrides, "api_llm_model_dir": None, "llm_model_dir": None}
    return ingress.bind(generator.bind(generator_overrides), overrides, llm.bind(overrides))


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run serve_config.yaml`` / ``serve deploy``.

    ``args`` are Settings field names (without the FRAUDGEN_ prefix), e.g. ``output_uri``; the rest comes
    from the FRAUDGEN_* environment of the replicas. Deployment sizes come from serve_config.yaml, which
    sizes the ``llm`` deployment too: it is always bound here (scaled to zero locally, so it costs nothing
    until a model is configured and used).
    """
    settings = Settings(**(args or {}))
    return build_application(settings, bind_llm=True)
