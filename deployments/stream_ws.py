"""``WS /v1/generator/stream``: the paced transaction stream over a WebSocket.

Query parameters are the :class:`fraudgen.stream.StreamConfig` fields (``rate``, ``scenarios``, ``seed``,
``fraud_rate``, ``speedup``, ``rows``, ``duration_s``). Pacing happens on the server: the stream runs in a
worker thread and hands NDJSON text frames (one or more transactions each) to the socket through a
bounded queue, so a slow client slows the stream (its lag grows) instead of growing server memory.
The client may send ``{"rate": R}`` to change the rate, or ``{"stop": true}``; the server ends with a
``{"event": "end", ...}`` summary frame and close code 1000.

Close codes: 1008 bad parameters (reason names the field), 4401 unauthenticated, 4403 missing scope,
4429 rate limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from deployments.auth import SCOPE_READ, Authenticator, AuthError, require_scope
from fraudgen.request import parse_scenario_mix
from fraudgen.stream import Stream, StreamConfig

MAX_WS_RATE = 200_000.0
_FIELDS = {"rate", "seed", "fraud_rate", "speedup", "rows", "duration_s", "users", "stream_id"}


class _QueueSink:
    """Stream sink that hands NDJSON frames to the socket's sender through a bounded queue."""

    def __init__(self, frames: queue.Queue[str | None], stopped: threading.Event) -> None:
        self._frames = frames
        self._stopped = stopped

    def send(self, table: pa.Table) -> None:
        from fraudgen.sinks.kafka import json_values

        frame = "\n".join(json_values(table).to_pylist())
        while not self._stopped.is_set():
            try:
                self._frames.put(frame, timeout=0.2)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def parse_stream_query(params: dict[str, str]) -> StreamConfig:
    """Query string → StreamConfig; raises ValueError naming the field and the limit."""
    unknown = sorted(set(params) - _FIELDS - {"scenarios"})
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}")
    fields: dict[str, Any] = {k: v for k, v in params.items() if k in _FIELDS}
    if "scenarios" in params:
        fields["scenario_mix"] = parse_scenario_mix(params["scenarios"])
    try:
        config = StreamConfig.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ValueError(f"{name}: {str(first['msg']).removeprefix('Value error, ')}") from exc
    if config.rate > MAX_WS_RATE:
        raise ValueError(f"rate: at most {MAX_WS_RATE:,.0f} transactions/s over a WebSocket")
    return config


def register_stream_route(app: FastAPI, auth: Authenticator, state: Any) -> None:
    @app.websocket("/v1/generator/stream")
    async def stream_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        client = websocket.client.host if websocket.client else None
        try:
            principal = await asyncio.to_thread(auth.authenticate, websocket.headers, client)
            require_scope(principal, SCOPE_READ)
        except AuthError as exc:
            await websocket.close(code=4401 if exc.status == 401 else 4403, reason=exc.message[:120])
            return
        wait = await state.admit(principal.id)
        if wait > 0:
            await websocket.close(code=4429, reason=f"rate limited; retry after {wait:.0f} s")
            return
        try:
            config = parse_stream_query(dict(websocket.query_params))
        except ValueError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await _serve_stream(websocket, config)


async def _serve_stream(websocket: WebSocket, config: StreamConfig) -> None:
    frames: queue.Queue[str | None] = queue.Queue(maxsize=8)
    stopped = threading.Event()
    runner = Stream(config, _QueueSink(frames, stopped))
    outcome: dict[str, Any] = {}

    def produce() -> None:
        try:
            outcome["stats"] = runner.run().summary()
        except Exception as exc:  # reported to the client in the end frame
            outcome["error"] = str(exc)
        finally:
            stopped.set()
            with contextlib.suppress(queue.Full):
                frames.put(None, timeout=1)

    worker = threading.Thread(target=produce, name="fraudgen-ws-stream", daemon=True)
    worker.start()
    control = asyncio.create_task(_control(websocket, runner))
    try:
        while True:
            frame = await asyncio.to_thread(_next_frame, frames, stopped)
            if frame is None:
                break
            await websocket.send_text(frame)
        await asyncio.to_thread(worker.join, 5)
        await websocket.send_text(json.dumps({"event": "end", **outcome.get("stats", {}), **outcome}))
        await websocket.close(code=1000)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        runner.stop("client")
        stopped.set()
        control.cancel()


def _next_frame(frames: queue.Queue[str | None], stopped: threading.Event) -> str | None:
    while True:
        try:
            return frames.get(timeout=0.2)
        except queue.Empty:
            if stopped.is_set() and frames.empty():
                return None


async def _control(websocket: WebSocket, runner: Stream) -> None:
    """Client messages: ``{"rate": R}`` changes the pace, ``{"stop": true}`` ends the stream."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        while True:
            text = await websocket.receive_text()
            try:
                message = json.loads(text)
                if message.get("stop"):
                    runner.stop("client")
                elif "rate" in message:
                    rate = float(message["rate"])
                    if not 0 < rate <= MAX_WS_RATE:
                        raise ValueError(f"rate must be in (0, {MAX_WS_RATE:,.0f}]")
                    runner.set_rate(rate)
                else:
                    raise ValueError("expected {'rate': R} or {'stop': true}")
            except (ValueError, TypeError, AttributeError) as exc:
                await websocket.send_text(json.dumps({"event": "error", "message": str(exc)}))
