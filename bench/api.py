"""API latency through a real Ray Serve deployment on 127.0.0.1; prints ONE JSON line.

preview(100 tx): P50/P95/P99 over sequential requests (targets P50 ≤ 50 ms, P99 ≤ 150 ms; seed 800 ms /
1.5 s). generate(50,000 tx): P50 over sequential requests with distinct seeds (target ≤ 3 s; seed 3 min),
each a full generate + validate + Parquet export + report. Usage: ``python bench/api.py [--previews N]
[--generates N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import httpx
import numpy as np

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--previews", type=int, default=400)
    parser.add_argument("--generates", type=int, default=5)
    args = parser.parse_args()

    from ray import serve

    from deployments.serve_app import build_application
    from fraudgen.config import Settings
    from fraudgen.devservices import free_ports
    from fraudgen.raylocal import init_ray

    init_ray(num_cpus=2)
    (port,) = free_ports(1)
    out = tempfile.mkdtemp(prefix="fraudgen-bench-api-")
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    settings = Settings(
        output_uri=out, rate_limit_per_minute=10_000_000, api_state_actor=f"bench-{os.getpid()}"
    )
    serve.run(
        build_application(settings, ingress_replicas=1, generator_replicas=1), name="bench", route_prefix="/"
    )
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=300) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for i in range(30):  # warm-up: imports, world tables, connection pool
            client.post("/v1/generator/preview", json={"count": 100, "seed": i})
        preview_s = []
        for i in range(args.previews):
            started = time.perf_counter()
            answer = client.post("/v1/generator/preview", json={"count": 100, "seed": 1000 + i})
            preview_s.append(time.perf_counter() - started)
            assert answer.status_code == 200 and answer.json()["count"] == 100, answer.text
        client.post(
            "/v1/generator/generate", json={"count": 50_000, "seed": 1, "allow_failed": True}
        )  # warm-up
        generate_s, passed = [], 0
        for i in range(args.generates):
            body = {"count": 50_000, "seed": 10_000 + i, "allow_failed": True}
            started = time.perf_counter()
            answer = client.post("/v1/generator/generate", json=body)
            generate_s.append(time.perf_counter() - started)
            assert answer.status_code == 200 and answer.json()["rows"] == 50_000, answer.text
            passed += bool(answer.json()["validation"]["passed"])
    serve.delete("bench")
    p = np.percentile(np.array(preview_s) * 1000, [50, 95, 99])
    print(
        json.dumps(
            stamp(
                {
                    "bench": "api",
                    "machine": platform.node(),  # stamp() adds the date, cores, load average and calibration
                    "preview_100_requests": len(preview_s),
                    "preview_100_p50_ms": round(float(p[0]), 2),
                    "preview_100_p95_ms": round(float(p[1]), 2),
                    "preview_100_p99_ms": round(float(p[2]), 2),
                    "generate_50k_requests": len(generate_s),
                    "generate_50k_p50_s": round(float(np.median(generate_s)), 3),
                    "generate_50k_min_s": round(float(min(generate_s)), 3),
                    "generate_50k_validation_passed": passed,
                    "targets": {"preview_p50_ms": 50, "preview_p99_ms": 150, "generate_50k_p50_s": 3},
                    "seed_targets": {
                        "preview_p50_ms": 800,
                        "preview_p99_ms": 1500,
                        "generate_50k_p50_s": 180,
                    },
                }
            )
        )
    )


if __name__ == "__main__":
    main()
