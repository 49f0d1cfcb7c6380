"""The rule engine: one shard of a request → one contract Arrow table. Pure and deterministic."""

from __future__ import annotations

import hashlib
from types import ModuleType

import numpy as np
import pyarrow as pa

from fraudgen.request import GenerationRequest
from fraudgen.schema import SCENARIOS
from fraudgen.simulate import (
    account_takeover,
    card_testing,
    chargeback_fraud,
    identity_theft,
    merchant_fraud,
    money_laundering,
    phishing,
)
from fraudgen.simulate.context import ShardContext, time_order
from fraudgen.simulate.frame import Frame, IdContext, frame_to_arrow
from fraudgen.simulate.legit import generate_legit
from fraudgen.simulate.manifest import ShardSpec, build_manifest, world_seed
from fraudgen.world import COUNTRY_CODES, COUNTRY_WEIGHT, CURRENCY_CODES, build_merchants, build_users

#: One module per scenario, in SCENARIOS order; each has MIN_CASE_SIZE, sample_case_sizes() and build().
SCENARIO_MODULES: dict[str, ModuleType] = {
    "card_testing": card_testing,
    "account_takeover": account_takeover,
    "identity_theft": identity_theft,
    "merchant_fraud": merchant_fraud,
    "money_laundering": money_laundering,
    "phishing": phishing,
    "chargeback_fraud": chargeback_fraud,
}
assert tuple(SCENARIO_MODULES) == SCENARIOS


def request_countries(request: GenerationRequest) -> tuple[int, ...]:
    if request.countries:
        return tuple(sorted(COUNTRY_CODES.index(c) for c in request.countries))
    return tuple(i for i in range(len(COUNTRY_CODES)) if COUNTRY_WEIGHT[i] > 0)


def transaction_prefix(request: GenerationRequest, shard: int, epoch: int = 0) -> str:
    """Transaction ids are unique across batches: a tag of (tenant, batch, seed), the shard (and the
    stream chunk), then the row."""
    tag = hashlib.sha256(
        f"{request.tenant_id}|{request.resolved_batch_id}|{request.seed}".encode()
    ).hexdigest()
    return f"t{tag[:12]}_{shard:05d}_" if epoch == 0 else f"t{tag[:12]}_{shard:05d}e{epoch}_"


def plan_case_sizes(rng: np.random.Generator, module: ModuleType, quota: int) -> np.ndarray:
    """Case sizes of one scenario filling ``quota`` rows; a remainder too small for a case goes to legit."""
    minimum = int(module.MIN_CASE_SIZE)
    if quota < minimum:
        return np.zeros(0, dtype=np.int64)
    drawn = module.sample_case_sizes(rng, quota // minimum + 1).astype(np.int64)
    fitting = int(np.searchsorted(np.cumsum(drawn), quota, side="right"))
    sizes = drawn[:fitting]
    remainder = quota - int(sizes.sum())
    if remainder >= minimum:
        sizes = np.append(sizes, remainder)
    return sizes


def shard_context(request: GenerationRequest, spec: ShardSpec) -> ShardContext:
    key = world_seed(request)
    countries = request_countries(request)
    start_us = int(request.start.timestamp() * 1_000_000)
    end_us = int(request.end.timestamp() * 1_000_000)
    population = max(request.population, 1)
    merchants = build_merchants(key, population, countries)
    users = build_users(key, spec.user_start, spec.user_count, countries, merchants, start_us, end_us)
    return ShardContext(
        seed=key,
        shard=spec.index,
        start_us=start_us,
        end_us=end_us,
        users=users,
        merchants=merchants,
        countries=countries,
        forced_currency=CURRENCY_CODES.index(request.currency) if request.currency else -1,
        identity_user_start=spec.identity_user_start,
        epoch=spec.epoch,
    )


def generate_frame(request: GenerationRequest, spec: ShardSpec) -> Frame:
    """The shard's rows in time order, still integer-coded."""
    # the world (users, merchants) comes from the request alone; these streams drive the events, and a
    # stream chunk (epoch > 0) gets fresh ones over the same world
    entropy = [*spec.entropy, spec.epoch] if spec.epoch else list(spec.entropy)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(1 + len(SCENARIOS))]
    ctx = shard_context(request, spec)
    frames: list[Frame] = []
    used = 0
    for s, name in enumerate(SCENARIOS):
        quota = min(spec.fraud_quota[s], spec.rows - used)
        rng = streams[1 + s]
        sizes = plan_case_sizes(rng, SCENARIO_MODULES[name], quota)
        if sizes.size == 0:
            continue
        cases = ctx.case_number(s, np.arange(sizes.size, dtype=np.int64))
        frame = SCENARIO_MODULES[name].build(ctx, sizes, rng, cases)
        frame.is_fraud[:] = True
        frame.scenario[:] = s
        frames.append(frame)
        used += len(frame)
    frames.append(generate_legit(ctx, spec.rows - used, streams[0]))
    combined = Frame.concat(frames)
    return combined.take(time_order(combined.ts))


def generate_shard(request: GenerationRequest, spec: ShardSpec, source: str = "rules") -> pa.Table:
    """One shard as a contract table."""
    frame = generate_frame(request, spec)
    ids = IdContext(
        seed=world_seed(request),
        batch_id=request.resolved_batch_id,
        tenant_id=request.tenant_id,
        source=source,
        transaction_prefix=transaction_prefix(request, spec.index, spec.epoch),
    )
    return frame_to_arrow(frame, ids)


def generate_table(request: GenerationRequest) -> pa.Table:
    """The whole request in-process (previews, tests, API-sized batches): all shards concatenated."""
    return pa.concat_tables([generate_shard(request, spec) for spec in build_manifest(request)])
