"""Generation benchmark: one JSON line.

``in_memory``: the rule engine into Arrow in memory on one core (``generate_shard`` shard after shard, each
table discarded so memory stays bounded; the cached first-call merchant build is excluded by a warm-up
shard). Further measurements (e.g. end to end to Parquet) plug in as more functions of ``MEASUREMENTS``,
selectable with ``--only``.

    python bench/generate.py [--rows N] [--seed S] [--only in_memory,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from fraudgen.request import GenerationRequest
from fraudgen.simulate.engine import generate_shard
from fraudgen.simulate.manifest import build_manifest

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line


def in_memory(request: GenerationRequest) -> dict[str, Any]:
    """Rows per second of ``generate_shard`` on this process's one core, for ``request.rows`` rows."""
    specs = build_manifest(request)
    generate_shard(request, specs[0])  # warm-up: builds and caches the batch's merchant pool
    rows = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for spec in specs:
        rows += generate_shard(request, spec).num_rows
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # the CPU-time rate is what one core does even when the machine is shared (wall time then includes
    # waiting for the core); on an idle machine the two agree
    return {
        "in_memory_rows_per_s_one_core": round(rows / elapsed),
        "in_memory_rows_per_s_cpu_time": round(rows / cpu),
        "in_memory_seconds": round(elapsed, 3),
    }


def end_to_end(request: GenerationRequest) -> dict[str, Any]:
    """Rows per second of the whole pipeline (Ray Data, both cores): generate, summarise for validation,
    write Parquet, merge the summaries, apply the gates, write the report and the manifest, publish.
    Peak memory is the PSS (proportional set size: shared pages split between the processes sharing them,
    so the object store and libraries are not counted once per worker) summed over the driver and the
    Ray process tree at its highest sample."""
    import shutil
    import tempfile
    import threading

    import psutil

    from fraudgen.config import Settings
    from fraudgen.pipeline import run_generation
    from fraudgen.raylocal import init_ray

    init_ray()
    peak = {"rss": 0}
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.wait(0.5):
            procs = [me, *me.children(recursive=True)]
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_full_info().pss
                except psutil.Error:
                    continue
            peak["rss"] = max(peak["rss"], rss)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out = tempfile.mkdtemp(prefix="bench-gen-")
    try:
        started = time.perf_counter()
        result = run_generation(request, Settings(), out_uri=out, allow_failed=True)
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        shutil.rmtree(out, ignore_errors=True)
    return {
        "end_to_end_rows_per_s": round(result.rows / elapsed),
        "end_to_end_seconds": round(elapsed, 3),
        "end_to_end_files": len(result.files),
        "end_to_end_validation_passed": bool(result.validation and result.validation.get("passed")),
        "end_to_end_peak_pss_mib_all_processes": round(peak["rss"] / 2**20, 1),
    }


#: name → measurement; each returns the JSON fields it contributes.
MEASUREMENTS: dict[str, Callable[[GenerationRequest], dict[str, Any]]] = {
    "in_memory": in_memory,
    "end_to_end": end_to_end,
}


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma list of {', '.join(MEASUREMENTS)}"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"--only: unknown measurement(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}")
    request = GenerationRequest(rows=args.rows, seed=args.seed)
    result: dict[str, Any] = {"benchmark": "generate", "rows": args.rows}
    for name in chosen:
        result.update(MEASUREMENTS[name](request))
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(stamp(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
