"""The shard manifest: how a request is cut into independent, individually seeded pieces of work.

The cut depends only on the request (rows, shard size, population, fraud rate and mix), never on the
number of workers, which is what makes the output identical whatever the parallelism.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from fraudgen.request import GenerationRequest
from fraudgen.schema import SCENARIOS

#: Most synthetic identities (identity-theft cases) a shard can create per reserved slot; a case has at
#: least this many rows, so ``quota // MIN`` bounds the number of identities a shard needs.
_IDENTITY_MIN_ROWS = 3


class ShardSpec(BaseModel):
    """One unit of work: ``rows`` transactions of users ``[user_start, user_start + user_count)``."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    index: int
    rows: int
    row_offset: int
    user_start: int
    user_count: int
    identity_user_start: int
    fraud_quota: tuple[int, ...]  # rows per scenario, in SCENARIOS order
    entropy: tuple[int, ...]  # seeds this shard's numpy Generators
    epoch: int = 0  # stream chunk: same world (users, merchants), new events; 0 for batches

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


def world_seed(request: GenerationRequest) -> int:
    """A 63-bit key of (seed, batch id): the world and the id bijections of one batch."""
    digest = hashlib.sha256(f"{request.seed}|{request.resolved_batch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def split_evenly(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer split of ``total`` proportional to ``weights`` (largest remainder, deterministic)."""
    if total == 0 or weights.sum() <= 0:
        return np.zeros(weights.size, dtype=np.int64)
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    short = total - int(base.sum())
    if short:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:short]] += 1
    return base


def build_manifest(request: GenerationRequest) -> list[ShardSpec]:
    n_shards = max(1, math.ceil(request.rows / request.shard_rows))
    rows = split_evenly(request.rows, np.ones(n_shards))
    population = max(request.population, n_shards)
    users = split_evenly(population, np.ones(n_shards))
    mix = request.normalised_mix()
    scenario_weights = np.array([mix.get(name, 0.0) for name in SCENARIOS])
    fraud_total = round(request.rows * request.fraud_rate)
    per_scenario = split_evenly(fraud_total, scenario_weights)
    quota = np.stack([split_evenly(int(q), rows.astype(float)) for q in per_scenario], axis=1)
    identity_slots = quota[:, SCENARIOS.index("identity_theft")] // _IDENTITY_MIN_ROWS + 1
    identity_start = population + np.cumsum(identity_slots) - identity_slots
    key = world_seed(request)
    row_offset = np.cumsum(rows) - rows
    user_start = np.cumsum(users) - users
    return [
        ShardSpec(
            batch_id=request.resolved_batch_id,
            index=i,
            rows=int(rows[i]),
            row_offset=int(row_offset[i]),
            user_start=int(user_start[i]),
            user_count=int(users[i]),
            identity_user_start=int(identity_start[i]),
            fraud_quota=tuple(int(q) for q in quota[i]),
            entropy=(request.seed, key, i),
        )
        for i in range(n_shards)
    ]
