"""LLM engine benchmark: one JSON line with CPU throughput and 1,000-tx P50 latency (GPU when present).

A default scratch model is trained first on 20,000 rule rows (not timed). Timed: ``generate_llm_table``
end to end (constrained sampling, parsing, world filling, per-row checks, copy gate, fallback, report),
without the optional batch validator (``validate=False``), which is a separate stage in the pipeline.

    .venv/bin/python bench/llm.py [--rows 10000] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _run(model_dir: str, rows: int, seed: int, device: str) -> tuple[float, dict[str, object]]:
    from fraudgen.llm.sample import generate_llm_table
    from fraudgen.request import GenerationRequest

    started = time.perf_counter()
    _, report = generate_llm_table(
        GenerationRequest(rows=rows, seed=seed, fraud_rate=0.05), model_dir, device=device, validate=False
    )
    return time.perf_counter() - started, report.model_dump()


def _figures(model_dir: str, device: str, rows: int, repeats: int) -> dict[str, object]:
    _run(model_dir, 1_000, 999, device)  # warm-up: load, DFA compile
    seconds, report = _run(model_dir, rows, 1, device)
    latencies = [_run(model_dir, 1_000, 100 + i, device)[0] for i in range(repeats)]
    return {
        "tx_per_s": round(rows / seconds, 1),
        "throughput_rows": rows,
        "p50_1k_s": round(statistics.median(latencies), 3),
        "validity_before_fallback": report["validity_rate"],
        "fallback_rows": report["fallback_rows"],
        "exact_copies": report["exact_copies"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=20_000)
    args = parser.parse_args()

    import sys

    import structlog
    import torch

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the JSON line only
    torch.set_num_threads(args.threads)
    from fraudgen.llm.train import train_model
    from fraudgen.request import GenerationRequest
    from fraudgen.simulate.engine import generate_table

    with tempfile.TemporaryDirectory(prefix="fraudgen-bench-llm-") as tmp:
        table = generate_table(GenerationRequest(rows=args.train_rows, seed=1, fraud_rate=0.3))
        trained = train_model(table, f"{tmp}/model", seed=0)
        cpu = _figures(f"{tmp}/model", "cpu", args.rows, args.repeats)
        out: dict[str, object] = {
            "bench": "llm",
            "machine": platform.node(),
            "cpu_threads": args.threads,
            "model": {
                "kind": "scratch gpt2",
                "parameters": trained.parameters,
                "train_steps": trained.steps,
                "train_seconds": trained.seconds,
                "final_loss": trained.final_loss,
            },
            "cpu": cpu,
            "seed_target_p50_1k_s": 20.0,
        }
        if torch.cuda.is_available():
            gpu = _figures(f"{tmp}/model", "cuda", max(args.rows, 50_000), args.repeats)
            out["gpu"] = {"card": torch.cuda.get_device_name(0), **gpu}
        else:
            out["gpu"] = None
            out["note"] = "no GPU lent: GPU throughput, 4-bit load and LoRA step not measured"
    print(json.dumps(stamp(out), sort_keys=True))


if __name__ == "__main__":
    main()
