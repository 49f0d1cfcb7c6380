"""Ray Data batch inference: an actor class that loads the model once and turns shard specs into tables.

Use it as a class UDF so each actor (one per GPU, or a few CPU actors) keeps the model loaded::

    ds = ray.data.from_items([{"spec": s.model_dump_json()} for s in build_manifest(request)])
    ds = ds.map_batches(LlmShardGenerator, batch_size=1,
                        fn_constructor_kwargs={"model_dir": d, "request_json": request.model_dump_json()},
                        **llm_compute(actors=2))

Every shard is generated exactly as ``generate_llm_table`` would generate it in-process (same seeds per
shard), so the output does not depend on the number of actors.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import structlog

from fraudgen.llm.sample import LlmReport, get_engine
from fraudgen.request import GenerationRequest
from fraudgen.simulate.manifest import ShardSpec

log = structlog.get_logger(__name__)


def llm_compute(actors: int = 1, device: str | None = None) -> dict[str, Any]:
    """``map_batches`` keyword arguments: an actor pool, one GPU per actor when CUDA is there."""
    import ray
    import torch

    gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    return {"compute": ray.data.ActorPoolStrategy(size=actors), "num_gpus": 1 if gpu else 0, "num_cpus": 1}


class LlmShardGenerator:
    """Callable per actor: ``{"spec": [ShardSpec JSON, …]}`` → the shards' contract rows as one table.

    ``last_reports`` keeps the per-shard :class:`LlmReport` of the latest call (the table itself carries
    ``source`` per row, so fallback counts can also be recomputed downstream).
    """

    def __init__(
        self,
        model_dir: str,
        request_json: str,
        adapter: str | None = None,
        device: str | None = None,
        threads: int = 1,
    ) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.request = GenerationRequest.model_validate_json(request_json)
        self.engine = get_engine(model_dir, adapter, device)
        self.last_reports: list[LlmReport] = []

    def generate(self, spec: ShardSpec) -> tuple[pa.Table, LlmReport]:
        return self.engine.generate_shard(self.request, spec)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        tables, self.last_reports = [], []
        for spec_json in batch["spec"]:
            table, report = self.generate(ShardSpec.model_validate_json(str(spec_json)))
            tables.append(table)
            self.last_reports.append(report)
            log.info("llm.shard", shard=json.loads(str(spec_json))["index"], rows=report.rows,
                     validity=round(report.validity_rate, 5), fallback=report.fallback_rows)  # fmt: skip
        return pa.concat_tables(tables)
