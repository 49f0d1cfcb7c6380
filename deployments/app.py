"""The FastAPI ingress: ``create_app(settings)`` builds the whole HTTP surface, with no module globals.
(No ``from __future__ import annotations`` here: FastAPI must evaluate the closures used in Depends.)

The same factory serves three hosts: a test client (in-process backend and state), the Ray Serve ingress
replica (generator deployment behind a handle, cluster-wide state in a named actor; see serve_app.py),
and any ASGI server. Cross-cutting concerns live in one pure-ASGI middleware (cheaper than Starlette's
BaseHTTPMiddleware on the preview hot path): request id, body size limit, structured access log, metrics.
"""

import contextlib
import hashlib
import json
import re
import time
import uuid
from typing import Annotated, Any, Protocol

import anyio
import orjson
import structlog
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.api_models import (
    BATCH_ID_PATTERN,
    BatchStatus,
    ErrorBody,
    GenerateBody,
    GenerateResponse,
    Health,
    PreviewBody,
    PreviewResponse,
    to_request,
)
from deployments.auth import SCOPE_READ, SCOPE_WRITE, Authenticator, AuthError, Principal, require_scope
from deployments.generator import GenerateCall, GeneratorService, Outcome
from deployments.metrics import METRICS_CONTENT_TYPE, LocalState, Observation, SharedState
from deployments.ratelimit import retry_after_header
from deployments.stream_ws import register_stream_route
from fraudgen import __version__
from fraudgen.config import Settings
from fraudgen.logs import configure_logging

log = structlog.get_logger("fraudgen.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNCOUNTED = frozenset({"/metrics"})
READY_CACHE_S = 2.0


class Backend(Protocol):
    """Where generation runs: in this process (LocalBackend) or in the Serve generator deployment."""

    async def preview(self, request_json: str, adapter: str | None) -> Outcome: ...
    async def generate(self, call: GenerateCall) -> Outcome: ...
    async def batch_status(self, batch_id: str) -> Outcome: ...
    async def ready(self) -> dict[str, str]: ...
    async def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None: ...
    async def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None: ...


class LocalBackend:
    """Runs the blocking GeneratorService in worker threads so the event loop stays free."""

    def __init__(self, service: GeneratorService) -> None:
        self.service = service

    async def preview(self, request_json: str, adapter: str | None) -> Outcome:
        return await anyio.to_thread.run_sync(self.service.preview, request_json, adapter)

    async def generate(self, call: GenerateCall) -> Outcome:
        return await anyio.to_thread.run_sync(self.service.generate, call)

    async def batch_status(self, batch_id: str) -> Outcome:
        return await anyio.to_thread.run_sync(self.service.batch_status, batch_id)

    async def ready(self) -> dict[str, str]:
        return await anyio.to_thread.run_sync(self.service.ready)

    async def idempotency_lookup(self, key_id: str) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(self.service.idempotency_lookup, key_id)

    async def idempotency_store(self, key_id: str, body_sha256: str, outcome: Outcome) -> None:
        await anyio.to_thread.run_sync(self.service.idempotency_store, key_id, body_sha256, outcome)


class RateLimitedError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class _BodyTooLargeError(Exception):
    pass


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    try:
        content = orjson.dumps(body, default=str)
    except TypeError:  # orjson refuses what a 422 may echo back: integers beyond 64 bits, lone surrogates
        content = json.dumps(body, default=str).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def outcome_response(outcome: Outcome) -> Response:
    return json_response(outcome.status, outcome.body, outcome.headers)


class ApiMiddleware:
    """Request id, body size limit, one structured log line and one metrics observation per request."""

    def __init__(self, app: ASGIApp, state: SharedState, max_body_bytes: int) -> None:
        self.app = app
        self.state = state
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._finish(scope, int(status["code"]), started)  # before the client has it all
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLargeError
            return message

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                await self._too_large(send_wrapper)
                return
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except _BodyTooLargeError:
                if status["started"]:
                    raise
                await self._too_large(send_wrapper)
            except Exception as exc:  # answered here so that the 500 is logged and counted like any other
                if status["started"]:
                    raise
                log.error("unhandled error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                response = json_response(500, {"detail": "internal error", "request_id": request_id})
                await response({"type": "http"}, _no_receive, send_wrapper)

    async def _too_large(self, send: Send) -> None:
        response = json_response(
            413, {"detail": f"request body larger than the limit of {self.max_body} bytes", "field": "body"}
        )
        await response({"type": "http"}, _no_receive, send)

    async def _finish(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        seconds = time.perf_counter() - started
        state = scope.get("state", {})
        rows, engine = int(state.get("rows", 0)), str(state.get("engine", ""))
        if endpoint not in _UNCOUNTED:
            try:
                await self.state.record(
                    [Observation(endpoint, scope["method"], status, seconds, rows, engine)]
                )
            except Exception as exc:  # metrics must never fail a request
                log.warning("metrics record failed", error=str(exc))
        fields: dict[str, Any] = {"method": scope["method"], "path": endpoint, "status": status,
                                  "ms": round(seconds * 1000, 2)}  # fmt: skip
        for key in ("batch_id", "principal"):
            if key in state:
                fields[key] = state[key]
        with contextlib.suppress(OSError, ValueError):  # a closed log stream must never become a 500
            (log.warning if status >= 500 else log.info)("request", **fields)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(
    settings: Settings, backend: Backend | None = None, state: SharedState | None = None
) -> FastAPI:
    """Build the API. Defaults: in-process generation and in-process metrics/rate-limit state."""
    configure_logging("INFO")
    backend = backend or LocalBackend(GeneratorService(settings))
    state = state or LocalState(settings.rate_limit_per_minute)
    auth = Authenticator(settings)
    app = FastAPI(
        title="fraudgen API",
        version=__version__,
        description="Labelled synthetic financial transactions with fraud scenarios (rules or LLM engine).",
    )
    app.add_middleware(ApiMiddleware, state=state, max_body_bytes=settings.api_max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="OAuth2/OIDC access token (JWT)")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="<id>.<secret>")
    ready_cache: dict[str, Any] = {"at": -1e9, "checks": {}}

    def requires(scope_name: str) -> Any:
        async def dependency(
            request: Request,
            _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            _key: Annotated[str | None, Depends(api_key)],
        ) -> Principal:
            client = request.client.host if request.client else None
            if auth.enabled:
                principal = await anyio.to_thread.run_sync(auth.authenticate, request.headers, client)
            else:
                principal = auth.authenticate(request.headers, client)
            request.state.principal = principal.log_id
            require_scope(principal, scope_name)
            wait = await state.admit(principal.id)
            if wait > 0:
                raise RateLimitedError(wait)
            return principal

        return dependency

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        parts = []
        for err in errors:
            loc = [str(p) for p in err.get("loc", []) if p not in ("body", "path", "query", "header")]
            parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
        return json_response(422, {"detail": errors, "message": "; ".join(parts)})

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> Response:
        return json_response(exc.status, {"detail": exc.message}, exc.headers)

    @app.exception_handler(RateLimitedError)
    async def _limited(_: Request, exc: RateLimitedError) -> Response:
        headers = {"Retry-After": retry_after_header(exc.retry_after_s)}
        limit = settings.rate_limit_per_minute
        return json_response(429, {"detail": f"rate limit of {limit} requests/minute exceeded"}, headers)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (401, 403, 413, 422, 429, 503)
    }

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> Response:
        """Liveness: the process answers."""
        return json_response(200, {"status": "ok"})

    @app.get("/health/ready", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def ready() -> Response:
        """Readiness: 503 naming every failing dependency (store, Postgres, Kafka, LLM model)."""
        now = time.monotonic()
        if now - ready_cache["at"] > READY_CACHE_S:
            ready_cache["checks"] = await backend.ready()
            ready_cache["at"] = now
        checks: dict[str, str] = ready_cache["checks"]
        failing = sorted(name for name, result in checks.items() if result != "ok")
        if failing:
            return json_response(503, {"status": "unready", "checks": checks, "failing": failing})
        return json_response(200, {"status": "ready", "checks": checks, "failing": []})

    @app.post("/v1/generator/preview", response_model=PreviewResponse, tags=["generator"], responses=errors)
    async def preview(
        body: PreviewBody, request: Request, _: Annotated[Principal, Depends(requires(SCOPE_READ))]
    ) -> Response:
        """1–100 transactions, generated synchronously; nothing is stored."""
        generation = to_request(body, settings.shard_rows)
        outcome = await backend.preview(generation.model_dump_json(), body.adapter)
        if outcome.status == 200:
            request.state.rows, request.state.engine = outcome.body["count"], body.engine
        return outcome_response(outcome)

    @app.post(
        "/v1/generator/generate",
        response_model=GenerateResponse,
        tags=["generator"],
        responses={**errors, 409: {"model": ErrorBody}},
    )
    async def generate(
        body: GenerateBody,
        request: Request,
        principal: Annotated[Principal, Depends(requires(SCOPE_WRITE))],
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Response:
        """Generate, validate, export up to 100,000 transactions; Postgres/Kafka follow in the background."""
        if body.count > settings.api_generate_max_count:
            limit = settings.api_generate_max_count
            return json_response(
                413,
                {"detail": f"count {body.count} is over this server's limit of {limit}", "field": "count"},
            )
        generation = to_request(body, settings.shard_rows)
        request.state.batch_id = generation.resolved_batch_id
        structlog.contextvars.bind_contextvars(batch_id=generation.resolved_batch_id)
        audit = {"principal": principal.log_id, "request_id": request.state.request_id}
        sinks = [str(s) for s in body.sinks] if body.sinks is not None else None

        def run() -> Any:
            call = GenerateCall(
                generation.model_dump_json(), body.format, sinks, body.allow_failed, audit, body.adapter
            )
            return backend.generate(call)

        if idempotency_key is None:
            outcome = await run()
        else:
            outcome = await _idempotent(principal, idempotency_key, body, run)
        if outcome.status == 200:
            request.state.rows, request.state.engine = outcome.body["rows"], body.engine
            if outcome.body.get("reused") or outcome.headers.get("Idempotent-Replayed"):
                request.state.rows = 0  # nothing new was generated
        return outcome_response(outcome)

    async def _idempotent(principal: Principal, key: str, body: GenerateBody, run: Any) -> Outcome:
        """Same key + same body → the stored response; same key + other body → 422."""
        if not key.strip() or not key.isprintable():
            return Outcome(422, {"detail": "Idempotency-Key must be 1–255 printable characters",
                                 "field": "Idempotency-Key"})  # fmt: skip
        key_id = hashlib.sha256(f"{principal.id}\n{key}".encode()).hexdigest()
        body_sha = hashlib.sha256(
            orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        record = await backend.idempotency_lookup(key_id)
        if record is None:
            if not await state.claim(key_id):
                return Outcome(409, {"detail": "a request with this Idempotency-Key is still in progress",
                                     "field": "Idempotency-Key"}, {"Retry-After": "1"})  # fmt: skip
            try:
                record = await backend.idempotency_lookup(key_id)  # finished while we were claiming
                if record is None:
                    outcome: Outcome = await run()
                    if outcome.status < 500:
                        await backend.idempotency_store(key_id, body_sha, outcome)
                    return outcome
            finally:
                await state.release(key_id)
        if record["body_sha256"] != body_sha:
            return Outcome(422, {"detail": "Idempotency-Key was already used with a different request body",
                                 "field": "Idempotency-Key"})  # fmt: skip
        return Outcome(int(record["status"]), record["body"], {"Idempotent-Replayed": "true"})

    @app.get(
        "/v1/generator/batches/{batch_id}",
        response_model=BatchStatus,
        tags=["generator"],
        responses={**errors, 404: {"model": ErrorBody}},
    )
    async def batch_status(
        batch_id: Annotated[str, Path(pattern=BATCH_ID_PATTERN)],
        request: Request,
        _: Annotated[Principal, Depends(requires(SCOPE_READ))],
    ) -> Response:
        """Export, Postgres and Kafka state and counts of one batch; 404 if unknown."""
        request.state.batch_id = batch_id
        return outcome_response(await backend.batch_status(batch_id))

    register_stream_route(app, auth, state)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format; totals across every ingress replica."""
        return Response(await state.render(), media_type=METRICS_CONTENT_TYPE)

    return app
