"""HTTP tests against a real ``serve.run`` on 127.0.0.1: two ingress replicas behind Serve's proxy, the
generator deployment behind a handle, metrics aggregated in the named actor, auth with API keys and JWTs
(JWKS served locally), rate limiting on a second application, and a bounded load test."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.serve_app import build_application
from fraudgen.config import Settings
from fraudgen.devservices import free_ports
from tests.test_api_support import AUDIENCE, ISSUER, Idp, Keys, api_keys, idp  # noqa: F401

PREVIEW = "/v1/generator/preview"
GENERATE = "/v1/generator/generate"
#: generates take seconds each on a 2-core box; a few clients issue them, the rest hammer preview/status
GENERATING_CLIENTS = 4


def _wait(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture(scope="module")
def served(
    ray_session: None,
    tmp_path_factory: pytest.TempPathFactory,
    api_keys: Keys,  # noqa: F811
    idp: Idp,  # noqa: F811
) -> Iterator[dict[str, Any]]:
    """Main app at / (2 ingress replicas, keys + JWT) and a rate-limited app at /limited."""
    import ray
    from ray import serve

    from deployments.metrics import ACTOR_NAMESPACE

    out = tmp_path_factory.mktemp("api-serve") / "out"
    tag = uuid.uuid4().hex[:8]
    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    main = Settings(
        output_uri=str(out),
        api_keys_file=api_keys.path,
        auth_jwks_url=idp.url,
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        rate_limit_per_minute=1_000_000,
        api_state_actor=f"api-main-{tag}",
    )
    limited = Settings(output_uri=str(out), rate_limit_per_minute=3, api_state_actor=f"api-limited-{tag}")
    serve.run(
        build_application(main, ingress_replicas=2, generator_replicas=1), name="api-main", route_prefix="/"
    )
    serve.run(build_application(limited, ingress_replicas=1, generator_replicas=1), name="api-limited",
              route_prefix="/limited")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/health")
    _wait(f"{base}/limited/health")
    yield {"base": base, "out": out, "keys": api_keys, "idp": idp}
    serve.shutdown()
    for name in (main.api_state_actor, limited.api_state_actor):
        ray.kill(ray.get_actor(name, namespace=ACTOR_NAMESPACE))


def _h(keys: Keys) -> dict[str, str]:
    return {"X-API-Key": keys.full}


def test_health_ready_docs_over_http(served: dict[str, Any]) -> None:
    base = served["base"]
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"generator": "ok", "output_store": "ok"}
    assert httpx.get(f"{base}/docs").status_code == 200
    assert "/v1/generator/generate" in httpx.get(f"{base}/openapi.json").json()["paths"]


def test_every_error_path_over_http(served: dict[str, Any]) -> None:
    base, keys, idp_ = served["base"], served["keys"], served["idp"]
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.post(PREVIEW, json={"count": 1}).status_code == 401
        assert c.post(PREVIEW, json={"count": 1}, headers={"X-API-Key": "ci.nope"}).status_code == 401
        assert c.post(GENERATE, json={"count": 1}, headers={"X-API-Key": keys.read_only}).status_code == 403
        bearer = {"Authorization": f"Bearer {idp_.token(scopes='generate:read')}"}
        assert c.post(PREVIEW, json={"count": 3}, headers=bearer).status_code == 200
        assert c.post(GENERATE, json={"count": 3}, headers=bearer).status_code == 403
        expired = {"Authorization": f"Bearer {idp_.token(expires_in=-300)}"}
        assert c.post(PREVIEW, json={"count": 3}, headers=expired).status_code == 401
        bad = c.post(PREVIEW, json={"count": 101}, headers=_h(keys))
        assert bad.status_code == 422 and bad.json()["message"].startswith("count")
        over = c.post(GENERATE, json={"count": 100_001}, headers=_h(keys))
        assert over.status_code == 422 and "100000" in over.json()["message"]
        huge = c.post(
            PREVIEW,
            content=b"{" + b" " * 70_000 + b"}",
            headers={**_h(keys), "content-type": "application/json"},
        )
        assert huge.status_code == 413
        assert c.get("/v1/generator/batches/unknown-batch", headers=_h(keys)).status_code == 404
        codes = [c.get("/limited/v1/generator/batches/x").status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        limited = c.get("/limited/v1/generator/batches/x")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_generate_status_idempotency_over_http(served: dict[str, Any]) -> None:
    base, keys = served["base"], served["keys"]
    body = {"count": 4000, "seed": 5, "fraud_rate": 0.1, "batch_id": "serve-idem-1", "allow_failed": True}
    with httpx.Client(base_url=base, timeout=120, headers=_h(keys)) as c:
        first = c.post(GENERATE, json=body, headers={"Idempotency-Key": "abc"})
        assert first.status_code == 200, first.text
        result = first.json()
        assert result["rows"] == 4000 and len(result["batch_sha256"]) == 64
        assert isinstance(result["validation"]["passed"], bool) and result["persistence"] == {}
        again = c.post(GENERATE, json=body, headers={"Idempotency-Key": "abc"})
        assert again.json() == result and again.headers["idempotent-replayed"] == "true"
        assert (
            c.post(GENERATE, json={**body, "seed": 6}, headers={"Idempotency-Key": "abc"}).status_code == 422
        )
        status = c.get(result["status_url"])
        assert status.status_code == 200 and status.json()["sinks"]["export"] == {
            "state": "published",
            "rows": 4000,
        }
        manifest = json.loads((Path(result["location"]) / "manifest.json").read_text())
        assert manifest["batch_sha256"] == result["batch_sha256"]


def _totals(text: str) -> dict[str, float]:
    """``endpoint status → count`` from fraud_generator_requests_total."""
    totals: dict[str, float] = {}
    for m in re.finditer(
        r'fraud_generator_requests_total\{endpoint="([^"]+)",method="\w+",status="(\d+)"\} (\S+)', text
    ):
        totals[f"{m.group(1)} {m.group(2)}"] = float(m.group(3))
    return totals


def test_metrics_totals_across_two_replicas(served: dict[str, Any]) -> None:
    from ray import serve

    base, keys = served["base"], served["keys"]
    replicas = serve.status().applications["api-main"].deployments["ingress"].replica_states
    assert replicas.get("RUNNING") == 2
    before = _totals(httpx.get(f"{base}/metrics").text)
    sent: Counter[str] = Counter()
    for i in range(30):  # new connection per request: the proxy spreads them over both replicas
        httpx.get(f"{base}/health")
        sent["/health 200"] += 1
        if i % 3 == 0:
            assert httpx.post(f"{base}{PREVIEW}", json={"count": 10}, headers=_h(keys)).status_code == 200
            sent["/v1/generator/preview 200"] += 1
    after = _totals(httpx.get(f"{base}/metrics").text)
    for key, count in sent.items():
        assert after.get(key, 0) - before.get(key, 0) == count, key


def _load(base: str, keys: Keys, seconds: float, clients: int = 32) -> dict[str, Any]:
    """Closed-loop clients: mostly previews, some generates (distinct batches) and status reads."""
    statuses: Counter[int] = Counter()
    batches: dict[str, int] = {}

    async def client(index: int) -> None:
        deadline = time.monotonic() + seconds
        n = 0
        async with httpx.AsyncClient(base_url=base, headers=_h(keys), timeout=120) as c:
            while time.monotonic() < deadline:
                n += 1
                if n % 8 == 0 and index < GENERATING_CLIENTS:
                    rows = 2000 + 50 * index
                    body = {"count": rows, "seed": index * 100_000 + n, "fraud_rate": 0.1}
                    answer = await c.post(GENERATE, json=body)
                    if answer.status_code == 200:
                        batches[answer.json()["batch_id"]] = rows
                elif n % 8 == 4 and batches:
                    answer = await c.get(f"/v1/generator/batches/{next(iter(batches))}")
                else:
                    answer = await c.post(PREVIEW, json={"count": 100, "seed": n})
                statuses[answer.status_code] += 1

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(clients)))

    asyncio.run(main())
    return {"statuses": statuses, "batches": batches}


def _check_load(served: dict[str, Any], seconds: float) -> None:
    base, keys = served["base"], served["keys"]
    result = _load(base, keys, seconds)
    statuses, batches = result["statuses"], result["batches"]
    assert sum(v for k, v in statuses.items() if k >= 500) == 0, statuses
    assert set(statuses) <= {200, 422}, statuses  # 422 only for a validation gate on a small batch
    assert batches, statuses
    with httpx.Client(base_url=base, headers=_h(keys), timeout=60) as c:
        for batch_id, rows in batches.items():  # no lost batch: every accepted one is published and complete
            status = c.get(f"/v1/generator/batches/{batch_id}").json()
            assert status["state"] == "published" and status["rows"] == rows, status
            manifest = json.loads((served["out"] / f"batch_id={batch_id}" / "manifest.json").read_text())
            assert manifest["rows"] == rows


def test_load_short(served: dict[str, Any]) -> None:
    _check_load(served, seconds=10)


@pytest.mark.slow
def test_load_60s(served: dict[str, Any]) -> None:
    _check_load(served, seconds=60)
