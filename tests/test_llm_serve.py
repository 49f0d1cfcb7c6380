"""The LLM Serve deployment over real HTTP (``serve.run`` on 127.0.0.1): engine=llm preview and generate,
LoRA adapters multiplexed by name, an unknown model named by /health/ready, and a replica that dies.

A tiny model (one layer, 150 steps, ~6 s) and one LoRA adapter are trained once for the module; nothing
is downloaded.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")

from deployments.serve_app import build_app, build_application  # noqa: E402
from fraudgen.config import Settings  # noqa: E402
from fraudgen.devservices import free_ports  # noqa: E402
from fraudgen.request import GenerationRequest  # noqa: E402
from fraudgen.schema import Transaction  # noqa: E402

PREVIEW = "/v1/generator/preview"
GENERATE = "/v1/generator/generate"
APP = "llm-app"
MISSING_APP = "llm-missing"
#: a client must get an answer (success or a clean 5xx) within this, whatever happens to replicas
BOUNDED_S = 120.0


def _wait(url: str, timeout: float = 120.0, status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=15)
            if last.status_code == status:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered {status}; last: {getattr(last, 'text', last)}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch base model, and a tenant directory over it holding the LoRA adapter ``acme``."""
    from fraudgen.llm.train import train_model
    from fraudgen.simulate.engine import generate_table

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("llm-serve")
    table = generate_table(GenerationRequest(rows=4_000, seed=1, fraud_rate=0.3))
    train_model(table, root / "base", max_steps=150, seed=0, n_layer=1, n_embd=64)
    train_model(table.slice(0, 2_000), root / "tenant", base=str(root / "base"), lora=True, adapter="acme",
                max_steps=10, seed=1)  # fmt: skip
    return root / "tenant"


@pytest.fixture(scope="module")
def served(ray_session: None, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The API with the LLM deployment at / and, at /missing, an app whose model directory does not exist."""
    import ray
    from ray import serve

    from deployments.metrics import ACTOR_NAMESPACE

    out = tmp_path_factory.mktemp("llm-serve-out") / "out"
    tag = uuid.uuid4().hex[:8]
    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    good = Settings(output_uri=str(out), llm_model_dir=str(model_dir), api_state_actor=f"llm-a-{tag}",
                    rate_limit_per_minute=1_000_000, llm_request_timeout_s=90)  # fmt: skip
    missing = Settings(output_uri=str(out), api_llm_model_dir=model_dir.parent / "no-such-model",
                       api_state_actor=f"llm-m-{tag}")  # fmt: skip
    replicas = {"ingress_replicas": 1, "generator_replicas": 1, "llm_replicas": 1}
    serve.run(build_application(good, **replicas), name=APP, route_prefix="/")
    serve.run(build_application(missing, **replicas), name=MISSING_APP, route_prefix="/missing")
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/health/ready")
    yield {"base": base, "out": out, "model_dir": model_dir}
    serve.shutdown()
    for name in (good.api_state_actor, missing.api_state_actor):
        ray.kill(ray.get_actor(name, namespace=ACTOR_NAMESPACE))


def _rows(body: dict[str, Any]) -> list[Transaction]:
    return [Transaction.model_validate(row) for row in body["transactions"]]


def test_llm_preview_rows_follow_the_contract_and_the_seed(served: dict[str, Any]) -> None:
    base = served["base"]
    ready = httpx.get(f"{base}/health/ready", timeout=30).json()
    assert ready["checks"]["llm_model"] == "ok" and ready["failing"] == []
    body = {"count": 40, "seed": 7, "fraud_rate": 0.3, "engine": "llm"}
    answer = httpx.post(f"{base}{PREVIEW}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    rows = _rows(result)
    assert result["count"] == len(rows) == 40 and result["engine"] == "llm"
    assert result["fraud_rows"] == sum(r.is_fraud for r in rows) > 0
    # model rows say source=llm; rows that failed the checks were replaced by rule rows and counted
    sources = [r.source for r in rows]
    assert set(sources) <= {"llm", "rules"}
    assert sources.count("rules") == result["llm"]["fallback_rows"] and sources.count("llm") > 0
    assert all(r.signature == r.expected_signature() for r in rows)
    assert result["llm"]["adapter"] is None
    # concurrent requests are batched on the replica, yet each answer depends only on its own seed
    seeds = [7, 8, 9, 10]
    answers: dict[int, Any] = {}

    def ask(seed: int) -> None:
        answers[seed] = httpx.post(f"{base}{PREVIEW}", json={**body, "seed": seed}, timeout=60).json()

    threads = [threading.Thread(target=ask, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers[7]["transactions"] == result["transactions"]
    assert answers[8]["transactions"] != answers[7]["transactions"]
    alone = httpx.post(f"{base}{PREVIEW}", json={**body, "seed": 9}, timeout=60).json()
    assert alone["transactions"] == answers[9]["transactions"]


def test_llm_generate_exports_like_a_rule_batch(served: dict[str, Any]) -> None:
    base = served["base"]
    body = {"count": 3_000, "seed": 4, "fraud_rate": 0.2, "engine": "llm", "batch_id": "llm-serve-1",
            "allow_failed": True}  # fmt: skip
    answer = httpx.post(f"{base}{GENERATE}", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["rows"] == 3_000 and len(result["batch_sha256"]) == 64
    assert isinstance(result["validation"]["passed"], bool)
    assert 0.0 <= result["llm"]["validity_rate"] <= 1.0
    location = Path(result["location"])
    manifest = yaml.safe_load((location / "manifest.json").read_text())  # JSON is YAML
    assert manifest["batch_sha256"] == result["batch_sha256"] and manifest["rows"] == 3_000
    assert manifest["llm"]["rows"] == 3_000
    table = pq.read_table(location / result["files"][0]["path"])
    assert table.num_rows == 3_000
    sources = table.column("source").to_pylist()
    assert sources.count("rules") == manifest["llm"]["fallback_rows"]
    status = httpx.get(f"{base}/v1/generator/batches/llm-serve-1", timeout=30).json()
    assert status["sinks"]["export"] == {"state": "published", "rows": 3_000}
    # the same request again reuses the published batch (model and adapter are part of its identity)
    again = httpx.post(f"{base}{GENERATE}", json=body, timeout=120).json()
    assert again["reused"] is True and again["batch_sha256"] == result["batch_sha256"]


def test_adapters_are_loaded_by_name_and_unknown_ones_are_named(served: dict[str, Any]) -> None:
    base = served["base"]
    body = {"count": 20, "seed": 3, "fraud_rate": 0.3, "engine": "llm"}
    acme = httpx.post(f"{base}{PREVIEW}", json={**body, "adapter": "acme"}, timeout=60)
    assert acme.status_code == 200, acme.text
    assert acme.json()["llm"]["adapter"] == "acme" and len(_rows(acme.json())) == 20
    again = httpx.post(f"{base}{PREVIEW}", json={**body, "adapter": "acme"}, timeout=60).json()
    assert again["transactions"] == acme.json()["transactions"]  # cached adapter, same seed, same rows
    unknown = httpx.post(f"{base}{PREVIEW}", json={**body, "adapter": "nope"}, timeout=60)
    assert unknown.status_code == 422 and "'nope'" in unknown.json()["detail"]
    assert unknown.json()["field"] == "adapter" and "acme" in unknown.json()["detail"]  # lists known ones
    bad_name = httpx.post(f"{base}{PREVIEW}", json={**body, "adapter": "../etc"}, timeout=30)
    assert bad_name.status_code == 422 and "adapter" in bad_name.json()["message"]
    # the replica still serves the base model afterwards
    assert httpx.post(f"{base}{PREVIEW}", json=body, timeout=60).status_code == 200


def test_unknown_model_directory_is_named_by_readiness(served: dict[str, Any]) -> None:
    base = f"{served['base']}/missing"
    ready = _wait(f"{base}/health/ready", status=503, timeout=60).json()
    assert ready["failing"] == ["llm_model"]
    assert "no-such-model" in ready["checks"]["llm_model"]
    preview = httpx.post(f"{base}{PREVIEW}", json={"count": 5, "engine": "llm"}, timeout=30)
    assert preview.status_code == 503 and "no-such-model" in preview.json()["detail"]
    rules = httpx.post(f"{base}{PREVIEW}", json={"count": 5}, timeout=30)
    assert rules.status_code == 200  # the rule engine still answers


def _llm_replica(app: str) -> tuple[str, Any]:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and f"{app}#llm#" in a["name"]]  # fmt: skip
    assert len(names) == 1, names
    return names[0], ray.get_actor(names[0], namespace="serve")


def _wait_replaced(old: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            name, _ = _llm_replica(APP)
            if name != old:
                return name
        except AssertionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"replica {old} was not replaced within {timeout} s")


def test_a_dying_replica_is_replaced_and_clients_never_hang(served: dict[str, Any]) -> None:
    import ray

    base = served["base"]
    preview = {"count": 30, "seed": 21, "fraud_rate": 0.3, "engine": "llm"}
    expected = httpx.post(f"{base}{PREVIEW}", json=preview, timeout=60).json()["transactions"]

    # 1. killed before a request: the call is retried on the replacement, or fails with a clean 503
    name, actor = _llm_replica(APP)
    ray.kill(actor, no_restart=True)
    started = time.monotonic()
    answer = httpx.post(f"{base}{PREVIEW}", json=preview, timeout=BOUNDED_S + 30)
    print(f"killed before: {answer.status_code} after {time.monotonic() - started:.1f} s")
    assert time.monotonic() - started < BOUNDED_S
    assert answer.status_code in (200, 503), answer.text
    if answer.status_code == 200:
        assert answer.json()["transactions"] == expected  # a retry gives the same rows
    else:
        assert "engine llm" in answer.json()["detail"]
    name = _wait_replaced(name)

    # 2. killed while sampling a large request
    result: dict[str, Any] = {}

    def generate() -> None:
        t0 = time.monotonic()
        body = {"count": 20_000, "seed": 5, "engine": "llm", "batch_id": "llm-serve-death",
                "allow_failed": True}  # fmt: skip
        response = httpx.post(f"{base}{GENERATE}", json=body, timeout=BOUNDED_S + 30)
        result.update(status=response.status_code, body=response.json(), seconds=time.monotonic() - t0)

    thread = threading.Thread(target=generate)
    thread.start()
    time.sleep(2.0)
    _, actor = _llm_replica(APP)
    ray.kill(actor, no_restart=True)
    thread.join(BOUNDED_S + 40)
    assert not thread.is_alive(), "the client hung"
    print(f"killed during: {result['status']} after {result['seconds']:.1f} s")
    assert result["seconds"] < BOUNDED_S
    assert result["status"] in (200, 503), result
    if result["status"] == 200:
        assert result["body"]["rows"] == 20_000
    else:
        assert "engine llm" in result["body"]["detail"]

    # 3. the deployment is healthy again and answers as before
    _wait_replaced(name)
    assert _wait(f"{base}/health/ready", timeout=BOUNDED_S).json()["checks"]["llm_model"] == "ok"
    again = httpx.post(f"{base}{PREVIEW}", json=preview, timeout=60)
    assert again.status_code == 200 and again.json()["transactions"] == expected


def test_serve_config_yaml_sizes_a_deployment_the_builder_binds(served: dict[str, Any]) -> None:
    """Every deployment named in serve_config.yaml exists in build_app's graph (Serve rejects the file
    otherwise), the llm one included, and the file passes Serve's own schema."""
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    named = {d["name"] for d in app["deployments"]}
    assert "llm" in named
    seen: set[str] = set()

    def walk(application: Any) -> None:
        deployment = application._bound_deployment
        seen.add(deployment.name)
        for arg in [*deployment.init_args, *deployment.init_kwargs.values()]:
            if hasattr(arg, "_bound_deployment"):
                walk(arg)

    walk(build_app(app["args"]))
    assert named <= seen, named - seen


def test_replicas_that_keep_dying_give_a_clean_503(served: dict[str, Any]) -> None:
    """Every replica of this deployment exits during the call: the retries run out and the ingress-side
    client answers 503 naming the failure, in bounded time."""
    import asyncio

    from ray import serve

    from deployments.llm_deployment import call_llm

    @serve.deployment(name="llm", ray_actor_options={"num_cpus": 0.05}, health_check_period_s=1)
    class Dies:
        async def preview(self, request_json: str) -> None:
            os._exit(1)

    handle = serve.run(Dies.bind(), name="llm-dies", route_prefix=None)
    settings = Settings(llm_request_retries=1, llm_request_timeout_s=60)
    try:
        started = time.monotonic()
        outcome = asyncio.run(call_llm(handle, "preview", "{}", None, settings))
        assert time.monotonic() - started < 60
        assert outcome.status == 503 and outcome.body["dependency"] == "llm"
        assert "LLM replica failed" in outcome.body["detail"] and "2 attempt(s)" in outcome.body["detail"]
    finally:
        serve.delete("llm-dies")


def test_in_process_api_serves_llm_preview_and_generate(model_dir: Path, tmp_path: Path) -> None:
    """Without Serve (TestClient, in-process backend) the same engine=llm paths work; the library's
    FRAUDGEN_LLM_MODEL_DIR name is honoured by the API."""
    from fastapi.testclient import TestClient

    from deployments.app import create_app

    client = TestClient(create_app(Settings(output_uri=str(tmp_path), llm_model_dir=str(model_dir))))
    assert client.get("/health/ready").json()["checks"]["llm_model"] == "ok"
    preview = client.post(PREVIEW, json={"count": 10, "seed": 2, "engine": "llm", "adapter": "acme"})
    assert preview.status_code == 200 and preview.json()["llm"]["adapter"] == "acme"
    assert len(_rows(preview.json())) == 10
    missing = client.post(PREVIEW, json={"count": 10, "engine": "llm", "adapter": "nope"})
    assert missing.status_code == 422 and "'nope'" in missing.json()["detail"]
    generate = client.post(GENERATE, json={"count": 1_500, "engine": "llm", "allow_failed": True})
    assert generate.status_code == 200, generate.text
    result = generate.json()
    assert result["rows"] == 1_500 and (Path(result["location"]) / "manifest.json").is_file()
