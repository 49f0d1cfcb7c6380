"""``WS /v1/generator/stream`` through a real ``serve.run`` on 127.0.0.1 with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from deployments.serve_app import build_application
from fraudgen.config import Settings
from fraudgen.devservices import free_ports
from tests.test_api_support import Keys, api_keys  # noqa: F401

PATH = "/v1/generator/stream"


@pytest.fixture(scope="module")
def ws_base(ray_session: None, tmp_path_factory: pytest.TempPathFactory, api_keys: Keys) -> Iterator[str]:  # noqa: F811
    import ray
    from ray import serve

    from deployments.metrics import ACTOR_NAMESPACE

    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    settings = Settings(
        output_uri=str(tmp_path_factory.mktemp("ws") / "out"),
        api_keys_file=api_keys.path,
        rate_limit_per_minute=1_000,
        api_state_actor="api-ws-test",
    )
    serve.run(
        build_application(settings, ingress_replicas=1, generator_replicas=1), name="api-ws", route_prefix="/"
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield f"ws://127.0.0.1:{port}{PATH}"
    serve.shutdown()
    ray.kill(ray.get_actor("api-ws-test", namespace=ACTOR_NAMESPACE))


async def _collect(
    url: str, headers: dict[str, str], control: list[tuple[float, dict[str, Any]]] | None = None
) -> tuple[int, dict[str, Any], list[float]]:
    """Rows received, the end frame, and the arrival time of each frame."""
    rows, end, arrivals = 0, {}, []
    async with connect(url, additional_headers=headers, max_size=2**26) as socket:
        started = time.monotonic()
        pending = list(control or [])
        async for message in socket:
            now = time.monotonic() - started
            while pending and now >= pending[0][0]:
                await socket.send(json.dumps(pending.pop(0)[1]))
            text = str(message)
            if text.startswith('{"event"'):
                end = json.loads(text)
                continue
            lines = text.split("\n")
            json.loads(lines[-1])
            rows += len(lines)
            arrivals.append(now)
    return rows, end, arrivals


async def _close_of(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with connect(url, additional_headers=headers) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_stream_is_paced_by_the_server(ws_base: str, api_keys: Keys) -> None:  # noqa: F811
    rows, end, _ = asyncio.run(
        _collect(f"{ws_base}?rate=2000&duration_s=4&seed=3", {"X-API-Key": api_keys.full})
    )
    assert end["event"] == "end" and end["sent"] == rows
    assert abs(rows - 8_000) <= 400, end


def test_client_changes_the_rate_mid_stream(ws_base: str, api_keys: Keys) -> None:  # noqa: F811
    url = f"{ws_base}?rate=1000&duration_s=6&seed=4"
    rows, end, _ = asyncio.run(_collect(url, {"X-API-Key": api_keys.full}, [(3.0, {"rate": 4000})]))
    assert end["sent"] == rows
    assert 3 * 1000 + 3 * 4000 - 1_500 <= rows <= 3 * 1000 + 3 * 4000 + 1_500, end


def test_bad_parameters_and_missing_auth_are_refused_with_a_close_code(ws_base: str, api_keys: Keys) -> None:  # noqa: F811
    key = {"X-API-Key": api_keys.full}
    code, reason = asyncio.run(_close_of(f"{ws_base}?rate=-5", key))
    assert code == 1008 and "rate" in reason
    code, reason = asyncio.run(_close_of(f"{ws_base}?scenarios=bank_robbery", key))
    assert code == 1008 and "bank_robbery" in reason
    code, reason = asyncio.run(_close_of(f"{ws_base}?colour=blue", key))
    assert code == 1008 and "colour" in reason
    code, _ = asyncio.run(_close_of(f"{ws_base}?rate=10", {}))
    assert code == 4401
    code, _ = asyncio.run(_close_of(f"{ws_base}?rate=10", {"X-API-Key": "ci.wrong"}))
    assert code == 4401
