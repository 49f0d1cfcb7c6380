"""How fast this machine is right now, recorded beside every benchmark figure.

The development VM's speed is not constant: on 2026-12-01 the code of 2026-11-25 generated 278k rows/s
where it had generated 520k rows/s on 2026-11-25 (same script, same data, idle machine, as far as the load
average tells). A figure without the machine's speed of the moment cannot be compared with another day's,
so every bench line carries ``calibration``: three fixed workloads that stand for our hot paths and do not
depend on this project's code (so they do not move when our code gets faster):

* ``python_mloops_per_s``: a plain interpreter loop (the per-message Python of the Kafka path, per-row
  hashing loops);
* ``sha256_650b_k_per_s``: one hashlib SHA256 call per 650-byte message (HMAC signing, dedup signatures);
* ``numpy_sort_mkeys_per_s``: numpy sorting int64 keys (vectorised generation and validation).

``speed_index`` is their geometric mean relative to :data:`REFERENCE`, the values measured on the
development VM early on 2026-12-01 (index 1.0). It says how fast the machine was, not how a bench
will behave: a CPU-bound single process tracks it, a run that contends with servers on the same cores may
not (Kafka publish gave 71k tx/s at both 0.96 and 0.66); read it with the load average.
Each workload is timed best-of-three (~1 s in all), once per process, when the bench script imports this
module: before its own work starts, so the figure tells the machine's speed, not the bench's own load.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: calibration of the 2-core development VM on 2026-12-01 (the BENCHMARKS.md figures of that day)
REFERENCE = {"python_mloops_per_s": 26.4, "sha256_650b_k_per_s": 1050.0, "numpy_sort_mkeys_per_s": 59.0}


def _best_of(runs: int, work: Any) -> float:
    best = math.inf
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def _python_loop(n: int = 2_000_000) -> None:
    total = 0
    for i in range(n):
        total += i


@functools.cache
def calibration() -> dict[str, Any]:
    """The three calibration rates and the speed index (measured on first call, then cached)."""
    messages = [os.urandom(650) for _ in range(50_000)]
    keys = np.random.default_rng(0).integers(0, 2**62, 2_000_000)
    sha = hashlib.sha256
    rates = {
        "python_mloops_per_s": 2.0 / _best_of(3, _python_loop),
        "sha256_650b_k_per_s": 50.0 / _best_of(3, lambda: [sha(m).digest() for m in messages]),
        "numpy_sort_mkeys_per_s": 2.0 / _best_of(3, lambda: np.sort(keys)),
    }
    index = math.prod(rates[k] / REFERENCE[k] for k in REFERENCE) ** (1 / len(REFERENCE))
    return {**{k: round(v, 2) for k, v in rates.items()}, "speed_index": round(index, 2)}


def stamp(line: dict[str, Any]) -> dict[str, Any]:
    """``line`` with the date, the core count, the load average and the machine's calibration added."""
    return {
        **line,
        "date": datetime.now(UTC).date().isoformat(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "calibration": calibration(),
    }


calibration()  # at import: bench scripts import this first thing, before any work of their own

if __name__ == "__main__":
    import json

    print(json.dumps(stamp({"bench": "calibration"})))
