"""The LLM Serve deployment: one loaded model per replica, LoRA adapters multiplexed by name, request
batching, a health check that samples, and the ingress-side client that survives a dying replica.

Why a deployment of its own: sampling is GPU (or many-CPU) bound and the model is large, so it scales on
its own resources (production: 1–3 replicas with one GPU each, autoscaled on ongoing requests) while the
ingress and the rule generator stay cheap. Locally it takes a quarter CPU and is only bound when an LLM
model directory is configured (``FRAUDGEN_API_LLM_MODEL_DIR`` or ``FRAUDGEN_LLM_MODEL_DIR``).

- Adapters: ``@serve.multiplexed`` loads ``<model>/adapters/<name>`` on first use and keeps the
  ``LLM_ADAPTERS_PER_REPLICA`` most recently used; the ingress routes with
  ``handle.options(multiplexed_model_id=<adapter>)`` so Serve prefers a replica that has it already.
  No multiplexed id means the base model, loaded in the constructor.
- Batching: ``@serve.batch`` gathers concurrent calls (Serve splits a batch by multiplexed id, so one
  batch is one adapter) and runs them in one worker-thread hop on that engine. Rows are still sampled per
  request with the request's own seeds: merging requests into one tensor batch would make a request's
  rows depend on its neighbours, breaking "same seed and body ⇒ identical data".
- Health: ``check_health`` samples one line when idle (a wedged CUDA context or corrupt weights fail it
  and Serve replaces the replica). A model directory that does not exist is a configuration error that a
  restart cannot fix: the replica stays up and ``ready()`` names the missing model (→ 503 on
  ``/health/ready`` and on ``engine=llm`` calls) instead of crash-looping.
- Replica death: :func:`call_llm` retries calls whose replica died (Serve starts a replacement) within a
  bounded time, then answers 503 naming the failure; a client never hangs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from deployments.generator import (
    LLM_MODEL_SETTINGS,
    LLM_REPORT_FIELDS,
    Outcome,
    error,
    preview_body,
    resolve_llm_model_dir,
)
from fraudgen.config import Settings
from fraudgen.request import GenerationRequest

log = structlog.get_logger(__name__)

#: adapters cached per replica (LRU); each holds a copy of the base weights, so keep it small on a GPU
LLM_ADAPTERS_PER_REPLICA = 3
#: local defaults: a quarter CPU, one replica (two under load); production values in serve_config.yaml
LOCAL_LLM_AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}
BASE_MODEL_ID = ""


@serve.deployment(
    name="llm",
    ray_actor_options={"num_cpus": 0.25},
    autoscaling_config=LOCAL_LLM_AUTOSCALING,
    max_ongoing_requests=16,
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=5,
)
class LlmGenerator:
    """Preview rows and API-sized batches from the configured model (and adapters) on this replica."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        import torch

        self.settings = Settings(**(settings or {}))
        if self.settings.llm_torch_threads > 0:
            torch.set_num_threads(self.settings.llm_torch_threads)
        self.model_dir = resolve_llm_model_dir(self.settings)
        self.device = self.settings.llm_device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.base: Any = None
        self.error: str | None = None
        self.busy = 0
        self._run.set_max_batch_size(self.settings.llm_serve_batch_size)  # type: ignore[attr-defined]
        self._run.set_batch_wait_timeout_s(self.settings.llm_serve_batch_wait_s)  # type: ignore[attr-defined]
        if self.model_dir is None:
            self.error = f"no model configured (set {LLM_MODEL_SETTINGS})"
        elif not self.model_dir.is_dir():
            self.error = f"LLM model directory {self.model_dir} ({LLM_MODEL_SETTINGS}) does not exist"
        else:
            try:
                self.base = self._load(None)
            except Exception as exc:  # a broken model directory is reported by ready(), not a crash loop
                self.error = f"model {self.model_dir} failed to load: {type(exc).__name__}: {exc}"
        if self.error:
            log.error("llm.replica_unready", reason=self.error)
        else:
            log.info("llm.replica_ready", model_dir=str(self.model_dir), device=self.device)

    def _load(self, adapter: str | None) -> Any:
        from fraudgen.llm.sample import LlmEngine

        engine = LlmEngine.load(str(self.model_dir), adapter, self.device)
        engine.batch_size = self.settings.llm_sample_batch
        return engine

    # --- adapters --------------------------------------------------------------------------------------
    @serve.multiplexed(max_num_models_per_replica=LLM_ADAPTERS_PER_REPLICA)
    async def load_adapter(self, adapter: str) -> Any:
        """Load one LoRA adapter over the base (in a thread: the event loop keeps answering)."""
        started = time.perf_counter()
        engine = await asyncio.to_thread(self._load, adapter)
        log.info("llm.adapter_loaded", adapter=adapter, seconds=round(time.perf_counter() - started, 3))
        return engine

    async def _engine(self) -> Any:
        model_id = serve.get_multiplexed_model_id()
        if model_id == BASE_MODEL_ID:
            return self.base
        return await self.load_adapter(model_id)

    # --- requests --------------------------------------------------------------------------------------
    async def preview(self, request_json: str) -> Outcome:
        """≤100 rows as the preview answer (``source`` is ``llm``, or ``rules`` for fallback rows)."""
        return await self._run(("preview", request_json))

    async def rows(self, request_json: str) -> Outcome:
        """A whole request's rows for export: ``Outcome(200, {"table": pa.Table, "llm": report})``."""
        return await self._run(("rows", request_json))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _run(self, jobs: list[tuple[str, str]]) -> list[Outcome]:
        if self.error is not None:
            return [error(503, f"engine llm: {self.error}", dependency="llm_model") for _ in jobs]
        try:
            engine = await self._engine()
        except (FileNotFoundError, ValueError) as exc:  # unknown or corrupt adapter: the client's input
            return [error(422, f"engine llm: {exc}", field="adapter") for _ in jobs]
        self.busy += 1
        try:
            return await asyncio.to_thread(self._run_sync, engine, jobs)
        finally:
            self.busy -= 1

    def _run_sync(self, engine: Any, jobs: list[tuple[str, str]]) -> list[Outcome]:
        return [self._one(engine, kind, request_json) for kind, request_json in jobs]

    def _one(self, engine: Any, kind: str, request_json: str) -> Outcome:
        import pyarrow as pa

        from fraudgen.llm.sample import LlmReport
        from fraudgen.simulate.manifest import build_manifest

        request = GenerationRequest.model_validate_json(request_json)
        tables, report = [], LlmReport()
        try:
            for index, spec in enumerate(build_manifest(request)):
                table, shard_report = engine.generate_shard(request, spec)
                tables.append(table)
                report = shard_report if index == 0 else report.merge(shard_report)
        except ValueError as exc:  # e.g. a scenario this model was never trained on
            return error(422, f"engine llm: {exc}", field="scenario_mix")
        except Exception as exc:  # answered, logged and counted as a 500 naming the cause, not a bare crash
            log.error("llm.sampling_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return error(500, f"engine llm: sampling failed: {type(exc).__name__}: {exc}")
        table = pa.concat_tables(tables)
        log.info("llm.request", kind=kind, rows=table.num_rows, adapter=engine.loaded.adapter,
                 validity=round(report.validity_rate, 5), fallback=report.fallback_rows)  # fmt: skip
        if kind == "preview":
            return Outcome(
                200, preview_body(request, table, llm=report.model_dump(include=LLM_REPORT_FIELDS))
            )
        return Outcome(200, {"table": table, "llm": report.model_dump(mode="json")})

    # --- health ----------------------------------------------------------------------------------------
    def ready(self) -> str:
        """``"ok"`` or why engine=llm cannot answer (the ingress shows it on /health/ready)."""
        return "ok" if self.error is None else f"not loaded: {self.error}"

    async def check_health(self) -> None:
        """Sample one line when idle; while requests are sampling, they are the proof of life."""
        if self.base is None or self.busy:
            return
        lines = await asyncio.to_thread(self.base.sample_text, "legit", 1, 0)
        if len(lines) != 1 or not lines[0].startswith("<bos> @legit "):
            raise RuntimeError(f"model {self.model_dir} sampled an invalid line: {lines!r}")


# --- ingress side ------------------------------------------------------------------------------------------


async def call_llm(
    handle: DeploymentHandle, method: str, request_json: str, adapter: str | None, settings: Settings
) -> Outcome:
    """Call the LLM deployment; retry when the replica died (Serve replaces it), within a deadline.

    Never raises for replica loss or timeouts: the answer is then a 503 naming what happened.
    """
    from tenacity import (
        AsyncRetrying,
        retry_if_exception_type,
        stop_after_attempt,
        stop_after_delay,
        wait_exponential,
    )

    target = handle.options(multiplexed_model_id=adapter) if adapter else handle
    timeout = settings.llm_request_timeout_s
    deadline = time.monotonic() + timeout
    attempts = settings.llm_request_retries + 1
    last: BaseException | None = None

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RayActorError),
        stop=stop_after_attempt(attempts) | stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    result: Outcome = await asyncio.wait_for(
                        getattr(target, method).remote(request_json), remaining
                    )
                except RayActorError as exc:
                    last = exc
                    log.warning("llm.replica_lost", method=method, attempt=attempt.retry_state.attempt_number,
                                error=type(exc).__name__)  # fmt: skip
                    raise
                return result
    except RayActorError:
        pass
    except TimeoutError:
        return error(503, f"engine llm: no answer from the LLM deployment within {timeout:g} s",
                     dependency="llm")  # fmt: skip
    name = type(last).__name__ if last is not None else "unknown"
    return error(
        503,
        f"engine llm: the LLM replica failed ({name}) and no replacement answered after "
        f"{attempts} attempt(s); retry shortly",
        dependency="llm",
    )


async def llm_ready(handle: DeploymentHandle) -> str:
    try:
        return str(await asyncio.wait_for(handle.ready.remote(), timeout=10))
    except Exception as exc:  # not answering is itself the reason
        return f"not responding: {type(exc).__name__}"


def request_engine(request_json: str) -> str:
    return str(orjson.loads(request_json).get("engine", "rules"))
