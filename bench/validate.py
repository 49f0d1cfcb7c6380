"""Benchmark: full validation (schema, dedup, rules, statistics vs the generator's profile) of N rows.

The batch is generated first and written shard by shard to Parquet in a temp directory (memory stays
bounded); only ``validate_dataset`` is timed. Prints one JSON line: rows/s, wall time, peak RSS of the
driver and peak summed RSS of the driver plus its Ray processes (sampled every 0.2 s; shared object-store
pages are counted once per process that maps them, so the sum over-states memory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import tempfile
import threading
import time

import psutil
import pyarrow.parquet as pq

from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_shard
from fraudgen.simulate.manifest import build_manifest


def write_batch(rows: int, seed: int, directory: str) -> str:
    request = GenerationRequest(rows=rows, seed=seed, batch_id="bench-validate")
    batch_dir = os.path.join(directory, "batch_id=bench-validate")
    os.makedirs(batch_dir)
    for spec in build_manifest(request):
        pq.write_table(generate_shard(request, spec), os.path.join(batch_dir, f"{spec.name}.parquet"))
    with open(os.path.join(batch_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"request": request.model_dump(mode="json")}, f)
    return batch_dir


class PeakRss(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["ray", "local"], default="ray")
    args = parser.parse_args()
    from fraudgen.config import Settings
    from fraudgen.validate.stage import validate_dataset

    with tempfile.TemporaryDirectory(prefix="fraudgen-bench-validate-") as tmp:
        t0 = time.perf_counter()
        batch_dir = write_batch(args.rows, args.seed, tmp)
        generate_s = time.perf_counter() - t0
        if args.mode == "ray":
            from fraudgen.raylocal import init_ray

            init_ray(num_cpus=os.cpu_count() or 2)
        monitor = PeakRss()
        monitor.start()
        t0 = time.perf_counter()
        report = validate_dataset(batch_dir, Settings(), use_ray=args.mode == "ray")
        seconds = time.perf_counter() - t0
        monitor.running = False
        monitor.join()
    print(
        json.dumps(
            {
                "bench": "validate",
                "rows": args.rows,
                "mode": args.mode,
                "cpus": os.cpu_count(),
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.rows / seconds),
                "target_rows_per_s": 1_000_000,
                "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "tree_peak_rss_mib": round(monitor.peak / 2**20),
                "target_peak_rss_mib": 3072,
                "passed": report.passed,
                "failures": [f.gate for f in report.failures],
                "generate_s": round(generate_s, 1),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
