"""Per-principal rate limiting: a token bucket of ``limit`` requests per minute.

Why a token bucket: it allows a short burst up to the per-minute allowance (a notebook firing a few
previews at once) and then refills continuously, so ``Retry-After`` is exact (the time until one token is
back) instead of "wait for the next minute". The bucket table lives wherever the cluster-wide state lives
(deployments/metrics.py): in the shared Ray actor under Serve, so the limit holds across ingress replicas,
or in-process for a single app.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``admit(principal)`` → 0.0 when allowed, else the seconds to wait (the 429's Retry-After)."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_principals: int = 100_000
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"rate limit must be >= 1 request per minute, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_principals = max_principals
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, principal: str, cost: float = 1.0) -> float:
        now = self.clock()
        bucket = self._buckets.get(principal)
        if bucket is None:
            if len(self._buckets) >= self.max_principals:
                self._evict_full(now)
            bucket = self._buckets[principal] = _Bucket(tokens=self.capacity, updated=now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def _evict_full(self, now: float) -> None:
        """Forget principals whose bucket has refilled: they are indistinguishable from new ones."""
        refill = self.capacity / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}


def retry_after_header(seconds: float) -> str:
    """HTTP Retry-After is whole seconds; round up so a client that obeys it is admitted."""
    return str(max(1, math.ceil(seconds)))
