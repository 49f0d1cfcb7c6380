"""Unit-level API tests through FastAPI's TestClient on ``create_app`` (in-process backend and state)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deployments.app import create_app
from deployments.auth import AuthConfigError, Authenticator, ensure_bind_allowed, hash_api_key
from deployments.command import serve_command
from deployments.ratelimit import TokenBucketLimiter
from fraudgen.config import Settings
from fraudgen.logs import configure_logging
from tests.test_api_support import AUDIENCE, ISSUER, Idp, Keys, api_keys, idp  # noqa: F401

PREVIEW = "/v1/generator/preview"
GENERATE = "/v1/generator/generate"


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(Settings(output_uri=str(tmp_path / "out"))))


def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"output_store": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {PREVIEW, GENERATE, "/v1/generator/batches/{batch_id}", "/health/ready", "/metrics"} <= set(paths)


def test_ready_names_failing_dependency(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = Settings(output_uri=str(blocker / "out"), postgres_dsn="postgresql://u:pw@127.0.0.1:1/db")
    answer = TestClient(create_app(settings)).get("/health/ready")
    body = answer.json()
    assert answer.status_code == 503
    assert body["failing"] == ["output_store", "postgres"]
    assert "pw" not in json.dumps(body)


def test_preview_is_deterministic_and_stores_nothing(client: TestClient, tmp_path: Path) -> None:
    body = {"count": 100, "seed": 7, "fraud_rate": 0.2, "scenario_mix": {"card_testing": 1, "phishing": 1}}
    first = client.post(PREVIEW, json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["count"] == len(data["transactions"]) == 100
    assert data["fraud_rows"] == sum(t["is_fraud"] for t in data["transactions"]) > 0
    assert {t["fraud_scenario"] for t in data["transactions"]} <= {None, "card_testing", "phishing"}
    assert isinstance(data["transactions"][0]["amount"], str)
    assert client.post(PREVIEW, json=body).json() == data
    assert not (tmp_path / "out").exists() or not any(
        p.name.startswith("batch_id=") for p in (tmp_path / "out").iterdir()
    )


@pytest.mark.parametrize(
    ("path", "body", "field", "fragment"),
    [
        (PREVIEW, {"count": 101}, "count", "100"),
        (PREVIEW, {"count": 0}, "count", "1"),
        (PREVIEW, {"count": 5, "bogus": 1}, "bogus", "Extra inputs"),
        (PREVIEW, {"count": 5, "fraud_rate": 2}, "fraud_rate", "1"),
        (PREVIEW, {"count": 5, "scenario_mix": {"nope": 1}}, "scenario_mix", "unknown scenario"),
        (PREVIEW, {"count": 5, "countries": ["ZZ"]}, "countries", "ZZ"),
        (PREVIEW, {"count": 5, "engine": "gpt"}, "engine", "rules"),
        (GENERATE, {"count": 100_001}, "count", "100000"),
        (GENERATE, {"count": 10, "format": "xml"}, "format", "parquet"),
        (GENERATE, {"count": 10, "sinks": ["ftp"]}, "sinks", "postgres"),
        (GENERATE, {"count": 10, "batch_id": "../x"}, "batch_id", "pattern"),
        (GENERATE, {}, "count", "required"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, path: str, body: dict, field: str, fragment: str
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    message = answer.json()["message"]
    assert message.startswith(field) or f"{field}." in message or f"; {field}" in message, message
    assert fragment.lower() in message.lower().replace(",", ""), message


def test_window_error_names_the_window(client: TestClient) -> None:
    answer = client.post(
        PREVIEW, json={"count": 5, "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    assert answer.status_code == 422 and "must be after start" in answer.json()["message"]


def test_unconfigured_sink_and_limits(tmp_path: Path) -> None:
    settings = Settings(output_uri=str(tmp_path / "out"), api_generate_max_count=500, api_max_body_bytes=2048)
    client = TestClient(create_app(settings))
    answer = client.post(GENERATE, json={"count": 10, "sinks": ["postgres"]})
    assert answer.status_code == 422 and "FRAUDGEN_POSTGRES_DSN" in answer.text
    over = client.post(GENERATE, json={"count": 501})
    assert over.status_code == 413 and "500" in over.json()["detail"] and over.json()["field"] == "count"
    big = client.post(PREVIEW, content=b'{"count": 5, "pad": "' + b"x" * 4096 + b'"}',
                      headers={"content-type": "application/json"})  # fmt: skip
    assert big.status_code == 413 and "2048" in big.json()["detail"]


def test_unknown_batch_is_404_and_bad_id_is_422(client: TestClient) -> None:
    assert client.get("/v1/generator/batches/nothing-here").status_code == 404
    assert client.get("/v1/generator/batches/-bad!").status_code == 422


def test_generate_export_status_and_idempotency(client: TestClient, tmp_path: Path) -> None:
    # allow_failed: this test is about the API; the generator's gate verdict is reported, not asserted
    body = {"count": 3000, "seed": 11, "batch_id": "api-unit-1", "fraud_rate": 0.1, "allow_failed": True}
    first = client.post(GENERATE, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["rows"] == 3000 and result["batch_id"] == "api-unit-1"
    assert len(result["batch_sha256"]) == 64 and isinstance(result["validation"]["passed"], bool)
    manifest = json.loads((Path(result["location"]) / "manifest.json").read_text())
    assert manifest["batch_sha256"] == result["batch_sha256"] and manifest["rows"] == 3000
    replay = client.post(GENERATE, json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200 and replay.json() == result
    assert replay.headers["idempotent-replayed"] == "true"
    other = client.post(GENERATE, json={**body, "seed": 12}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    clash = client.post(GENERATE, json={**body, "seed": 12})
    assert clash.status_code == 409 and "api-unit-1" in clash.json()["detail"]
    status = client.get(result["status_url"]).json()
    assert status["state"] == "published" and status["rows"] == 3000
    assert status["sinks"]["export"] == {"state": "published", "rows": 3000}
    metrics = client.get("/metrics").text
    assert (
        "fraud_generator_transactions_generated_total"
        '{endpoint="/v1/generator/generate",engine="rules"} 3000.0' in metrics
    )


def test_llm_engine_on_a_server_without_model_is_422_naming_the_setting(client: TestClient) -> None:
    answer = client.post(PREVIEW, json={"count": 5, "engine": "llm"})
    assert answer.status_code == 422 and "FRAUDGEN_API_LLM_MODEL_DIR" in answer.json()["detail"]


def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(output_uri=str(tmp_path), rate_limit_per_minute=3)))
    codes = [client.get("/v1/generator/batches/none").status_code for _ in range(4)]
    assert codes == [404, 404, 404, 429]
    limited = client.get("/v1/generator/batches/none")
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 20
    assert client.get("/health").status_code == 200  # health is never limited


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(60, clock=lambda: now[0])
    assert all(limiter.admit("p") == 0 for _ in range(60))
    assert limiter.admit("p") == pytest.approx(1.0)
    assert limiter.admit("q") == 0  # per principal
    now[0] = 1.0
    assert limiter.admit("p") == 0


def test_metrics_count_every_request(client: TestClient) -> None:
    for _ in range(3):
        client.get("/health")
    client.post(PREVIEW, json={"count": 20})
    client.post(PREVIEW, json={"count": 500})
    text = client.get("/metrics").text
    assert 'fraud_generator_requests_total{endpoint="/health",method="GET",status="200"} 3.0' in text
    assert (
        'fraud_generator_requests_total{endpoint="/v1/generator/preview",method="POST",status="422"} 1.0'
        in text
    )
    assert 'fraud_generator_errors_total{endpoint="/v1/generator/preview",status="422"} 1.0' in text
    assert (
        'fraud_generator_transactions_generated_total{endpoint="/v1/generator/preview",engine="rules"} 20.0'
        in text
    )
    assert 'fraud_generator_latency_seconds_count{endpoint="/v1/generator/preview"} 2.0' in text
    assert "/metrics" not in text.split("endpoint=")[-1]


# --- auth ------------------------------------------------------------------------------------------------


def test_api_keys(tmp_path: Path, api_keys: Keys) -> None:  # noqa: F811
    client = TestClient(create_app(Settings(output_uri=str(tmp_path), api_keys_file=api_keys.path)))
    assert client.post(PREVIEW, json={"count": 1}).status_code == 401
    wrong = client.post(PREVIEW, json={"count": 1}, headers={"X-API-Key": "ci.wrong"})
    assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
    assert (
        client.post(PREVIEW, json={"count": 1}, headers={"X-API-Key": api_keys.read_only}).status_code == 200
    )
    denied = client.post(GENERATE, json={"count": 10}, headers={"X-API-Key": api_keys.read_only})
    assert denied.status_code == 403 and "generate:write" in denied.json()["detail"]
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


def test_keys_file_refuses_clear_text(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"id": "x", "hash": "x.plain-secret"}]}))
    with pytest.raises(AuthConfigError, match="clear-text"):
        Authenticator(Settings(api_keys_file=path))
    path.write_text(json.dumps({"keys": [{"id": "x", "hash": hash_api_key("x.s", "sha256")}]}))
    assert Authenticator(Settings(api_keys_file=path)).enabled


def test_jwt(tmp_path: Path, idp: Idp) -> None:  # noqa: F811
    settings = Settings(
        output_uri=str(tmp_path), auth_jwks_url=idp.url, auth_issuer=ISSUER, auth_audience=AUDIENCE
    )
    client = TestClient(create_app(settings))

    def call(token: str, path: str = PREVIEW) -> int:
        return client.post(path, json={"count": 1}, headers={"Authorization": f"Bearer {token}"}).status_code

    assert call(idp.token()) == 200
    assert call(idp.token(expires_in=-120)) == 401
    assert call(idp.token(audience="other")) == 401
    assert call(idp.token(issuer="https://evil.invalid/")) == 401
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert call(idp.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))) == 401
    assert call(idp.token(scopes="generate:read"), GENERATE) == 403
    assert call("not-a-jwt") == 401
    assert client.post(PREVIEW, json={"count": 1}).status_code == 401


def test_jwks_needs_issuer_and_audience() -> None:
    with pytest.raises(AuthConfigError, match="FRAUDGEN_AUTH_ISSUER"):
        Authenticator(Settings(auth_jwks_url="http://127.0.0.1:1/jwks.json"))


def test_refuses_non_loopback_without_auth(api_keys: Keys) -> None:  # noqa: F811
    ensure_bind_allowed("127.0.0.1", Settings())
    ensure_bind_allowed("::1", Settings())
    with pytest.raises(AuthConfigError, match="authentication is mandatory"):
        ensure_bind_allowed("0.0.0.0", Settings())
    ensure_bind_allowed("0.0.0.0", Settings(api_keys_file=api_keys.path))
    assert serve_command("0.0.0.0", 8000, Settings()) == 2


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """structlog binds sys.stderr when configured; re-bind the real one once capsys has let it go."""
    yield
    configure_logging("INFO")


def test_logs_mask_keys_and_carry_ids(
    restore_logging: None,
    tmp_path: Path,
    api_keys: Keys,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = TestClient(create_app(Settings(output_uri=str(tmp_path), api_keys_file=api_keys.path)))
    client.post(PREVIEW, json={"count": 1}, headers={"X-API-Key": api_keys.full, "X-Request-ID": "req-42"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    request_lines = [x for x in lines if x.get("event") == "request"]
    assert (
        request_lines and request_lines[-1]["request_id"] == "req-42" and request_lines[-1]["status"] == 200
    )
    assert api_keys.full.split(".")[1] not in json.dumps(lines)
    assert request_lines[-1]["principal"] != "ci" and len(request_lines[-1]["principal"]) == 12
    assert os.environ.get("FRAUDGEN_API_KEYS_FILE") is None


def test_a_422_echoing_a_huge_integer_or_a_lone_surrogate_is_still_a_422(client: TestClient) -> None:
    huge = client.post(PREVIEW, json={"count": 5, "users": 3496504695870007956996096})
    assert huge.status_code == 422 and huge.json()["message"].startswith("users")
    odd = client.post(
        PREVIEW, content=b'{"count": 5, "currency": "\\ud8e3"}', headers={"content-type": "application/json"}
    )
    assert odd.status_code == 422
