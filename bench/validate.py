"""Benchmark: full validation (schema, dedup, rules, statistics vs the generator's profile) of N rows.

The batch is generated first and written shard by shard to Parquet in a temp directory (memory stays
bounded); only ``validate_dataset`` is timed. Prints one JSON line: rows/s, wall time, peak RSS of the
driver and peak summed RSS of the driver plus its Ray processes (sampled every 0.2 s; shared object-store
pages are counted once per process that maps them, so the sum over-states memory), and the CPU seconds
the driver and its Ray processes spent during validation. Other work shares this machine's cores, so
``rows_per_cpu_s`` (rows per CPU second, all processes) and ``rows_per_s_at_2_cores`` (what two idle cores
would give at that efficiency) are the load-independent figures; the wall-clock rate depends on the load.
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

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line


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
    """Samples the process tree: peak summed RSS, and CPU seconds per process (a process that exits keeps
    its last sample, so short-lived Ray workers are counted up to 0.1 s before they end)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True
        self.cpu: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.cpu_start = self.sample_cpu()

    def sample_cpu(self) -> dict[int, float]:
        me = psutil.Process()
        out: dict[int, float] = {}
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
                if p.pid not in self.kind:
                    self.kind[p.pid] = self.classify(me, p)
        return out

    @staticmethod
    def classify(me: psutil.Process, p: psutil.Process) -> str:
        """driver, worker (Ray worker processes: tasks and Ray Data's own actors) or ray (gcs, raylet…)."""
        if p.pid == me.pid:
            return "driver"
        line = " ".join(p.cmdline())
        return "worker" if "default_worker.py" in line or line.startswith("ray::") else "ray"

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self.cpu.update(self.sample_cpu())
            time.sleep(0.1)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds spent since the start, per kind of process and in total."""
        self.cpu.update(self.sample_cpu())
        out = {"driver": 0.0, "worker": 0.0, "ray": 0.0}
        for pid, t in self.cpu.items():
            out[self.kind[pid]] += t - self.cpu_start.get(pid, 0.0)
        out["total"] = sum(out.values())
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["ray", "local"], default="ray")
    parser.add_argument("--batch", help="validate this written batch directory instead of generating one")
    parser.add_argument("--repeat", type=int, default=1, help="validate the batch N times (best kept)")
    args = parser.parse_args()
    from fraudgen.config import Settings
    from fraudgen.validate.dataset import validate_dataset

    with tempfile.TemporaryDirectory(prefix="fraudgen-bench-validate-") as tmp:
        t0 = time.perf_counter()
        batch_dir = args.batch or write_batch(args.rows, args.seed, tmp)
        generate_s = time.perf_counter() - t0
        if args.mode == "ray":
            from fraudgen.raylocal import init_ray

            init_ray(num_cpus=os.cpu_count() or 2)
        runs = []
        for _ in range(args.repeat):
            monitor = PeakRss()
            monitor.start()
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            report = validate_dataset(batch_dir, Settings(), use_ray=args.mode == "ray")
            seconds = time.perf_counter() - t0
            monitor.running = False
            monitor.join()
            runs.append((seconds, monitor.cpu_seconds(), monitor.peak, load_before))
        best = min(range(len(runs)), key=lambda i: runs[i][0])
        seconds = runs[best][0]
        cpu_seconds = runs[best][1]["total"]
    print(
        json.dumps(
            stamp(
                {
                    "bench": "validate",
                    "rows": args.rows,
                    "mode": args.mode,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(args.rows / seconds),
                    "target_rows_per_s": 1_000_000,
                    "cpu_seconds": round(cpu_seconds, 2),
                    "rows_per_cpu_s": round(args.rows / cpu_seconds),
                    "rows_per_s_at_2_cores": round(2 * args.rows / cpu_seconds),
                    "runs_seconds": [round(r[0], 2) for r in runs],
                    "runs_cpu_seconds": [{k: round(v, 2) for k, v in r[1].items()} for r in runs],
                    "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    "tree_peak_rss_mib": round(max(r[2] for r in runs) / 2**20),
                    "target_peak_rss_mib": 3072,
                    "passed": report.passed,
                    "failures": [f.gate for f in report.failures],
                    "generate_s": round(generate_s, 1),
                    "load_average_1m_before": [round(r[3], 2) for r in runs],
                }
            )
        )
    )


if __name__ == "__main__":
    main()
