"""The ``fraudgen llm train`` / ``fraudgen llm sample`` command bodies (the Typer wiring lives in cli.py).

Exit codes follow the CLI contract: 0 ok, 1 a check failed (validity or copies gate), 2 usage/input error.
Both print one JSON document on stdout (the training result, or the sampling report).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import structlog

from fraudgen.request import GenerationRequest

log = structlog.get_logger(__name__)
#: validity before fallback below this fails ``llm sample`` (exit 1); the rows are still written
MIN_VALIDITY = 0.99


def _threads(settings: Any) -> None:
    import torch

    threads = int(getattr(settings, "llm_torch_threads", 1) or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def read_training_table(data: str) -> pa.Table:
    """Parquet file or directory (e.g. a ``batch_id=…`` output) → one contract table."""
    from fraudgen.schema import conform

    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data!r}: no such file or directory")
    files = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob("*.parquet"))
    if not files:
        raise ValueError(f"--data {data!r}: no Parquet files found")
    table = pads.dataset(files, format="parquet").to_table()
    return conform(table.drop_columns([c for c in table.column_names if c.startswith("__")]))


def llm_train_command(data: str, out: str, base: str, lora: bool, load_4bit: bool, settings: Any) -> int:
    """Train a scratch model, a full fine-tune, or a LoRA adapter from a Parquet batch."""
    from fraudgen.llm.train import train_model

    _threads(settings)
    key = getattr(settings, "llm_pseudonym_key", None)
    try:
        table = read_training_table(data)
        result = train_model(
            table,
            out,
            base=base,
            lora=lora,
            load_4bit=load_4bit,
            max_steps=int(getattr(settings, "llm_train_steps", 600)),
            seed=0,
            adapter=str(getattr(settings, "llm_adapter", None) or getattr(settings, "tenant_id", "default")),
            max_seconds=getattr(settings, "llm_train_max_seconds", None),
            device=getattr(settings, "llm_device", None),
            pseudonym_key=key.get_secret_value().encode() if key is not None else None,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), sort_keys=True))
    return 0


def llm_sample_command(model: str, rows: int, seed: int, out: str | None, settings: Any) -> int:
    """Sample ``rows`` transactions; write Parquet to ``out`` when given; print the report as JSON."""
    import pyarrow.parquet as pq

    from fraudgen.llm.sample import generate_llm_table

    _threads(settings)
    try:
        request = GenerationRequest(
            rows=rows, seed=seed, tenant_id=getattr(settings, "tenant_id", "default"), engine="llm"
        )
        table, report = generate_llm_table(
            request,
            model,
            adapter=getattr(settings, "llm_adapter", None),
            device=getattr(settings, "llm_device", None),
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if out:
        target = Path(out) / f"batch_id={request.resolved_batch_id}"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target / "part-00000.parquet")
    print(report.model_dump_json())
    if report.validity_rate < MIN_VALIDITY or report.exact_copies:
        print(
            f"error: validity before fallback {report.validity_rate:.4f} (min {MIN_VALIDITY}) or "
            f"{report.exact_copies} exact training copies",
            file=sys.stderr,
        )
        return 1
    return 0
