"""Training: rule-generated (or sanitised reference) rows → lines → a causal LM or a LoRA adapter.

``train_model`` pseudonymises identifiers, encodes rows with the codec, learns the grammar, then trains
either a small GPT-2-style model from scratch, a full fine-tune of a local HF causal LM, or (``lora``) a
PEFT LoRA adapter on a base (QLoRA when ``load_4bit`` on CUDA). Everything lands in ``out_dir``.
"""

from __future__ import annotations

import math
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import structlog

from fraudgen.llm import vocab as V
from fraudgen.llm.codec import encode_table
from fraudgen.llm.grammar import learn_grammar
from fraudgen.llm.model import (
    check_adapter_name,
    is_fraudgen_dir,
    load_causal_lm,
    lora_model,
    prepare_tokenizer,
    pseudonymise,
    read_meta,
    resize_embeddings,
    resolve_device,
    scratch_config,
    write_meta,
)
from fraudgen.llm.quality import reference_arrays
from fraudgen.llm.tokenizer import token_ids
from fraudgen.llm.tokens import to_text, to_tokens

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrainResult:
    out_dir: str
    base: str
    lora: bool
    adapter: str | None
    load_4bit: bool
    device: str
    rows: int
    lines: int
    tokens: int
    steps: int
    seconds: float
    final_loss: float
    parameters: int
    trainable_parameters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_model(
    table: pa.Table,
    out_dir: str | Path,
    base: str = "scratch",
    lora: bool = False,
    load_4bit: bool = False,
    max_steps: int = 600,
    seed: int = 0,
    *,
    adapter: str = "default",
    batch_size: int = 64,
    learning_rate: float | None = None,
    max_seconds: float | None = None,
    device: str | None = None,
    pseudonym_key: bytes | None = None,
    n_layer: int = 2,
    n_embd: int = 128,
) -> TrainResult:
    """Train on a contract table; returns what was trained and how long it took.

    ``base``: ``"scratch"``, a fraudgen model directory, or a local HF causal LM directory. ``lora`` needs a
    pretrained base and writes ``out_dir/adapters/<adapter>``. ``max_seconds`` stops early (CPU budgets).
    """
    import torch

    started = time.perf_counter()
    if table.num_rows == 0:
        raise ValueError("training table is empty")
    if lora and base == "scratch":
        raise ValueError(
            "--lora needs a pretrained base (--base DIR): train a scratch model first, then adapt it"
        )
    if load_4bit and base == "scratch":
        raise ValueError("--load-4bit quantises a pretrained base; it cannot be used with --base scratch")
    if lora:
        check_adapter_name(adapter)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    table = pseudonymise(table, pseudonym_key or secrets.token_bytes(32))
    encoded = encode_table(table)
    matrix, lengths = to_tokens(encoded.lines)
    grammar = learn_grammar(encoded.lines)
    tokenizer, added, weights = prepare_tokenizer(base, out, to_text(matrix, lengths))
    ids = token_ids(tokenizer)
    use_4bit = load_4bit and dev.startswith("cuda")
    if base == "scratch":
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel(scratch_config(len(tokenizer), n_layer=n_layer, n_embd=n_embd))
        model = model.to(dev)  # type: ignore[arg-type]
    else:
        assert weights is not None
        model = load_causal_lm(weights, dev, load_4bit=use_4bit)
        if added or model.get_input_embeddings().weight.shape[0] < len(tokenizer):
            resize_embeddings(model, len(tokenizer))
    if lora:
        model = lora_model(model, added, use_4bit)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = learning_rate or (3e-3 if base == "scratch" else 1e-3 if lora else 3e-4)
    steps, loss_value = _fit(model, ids[matrix], lengths, dev, max_steps, batch_size, lr, max_seconds, rng)
    model.eval()

    # --- save ----------------------------------------------------------------------------------------
    tokenizer.save_pretrained(str(out / "tokenizer"))
    meta_base: dict[str, Any] = read_meta(base) if base != "scratch" and is_fraudgen_dir(base) else {}
    if lora:
        adapter_dir = out / "adapters" / adapter
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        # new row tokens changed the embedding: store it whole so the adapter reloads exactly anywhere
        model.save_pretrained(str(adapter_dir), save_embedding_layers=bool(added))
        weights_ref = weights
    else:
        if (out / "model").exists():
            shutil.rmtree(out / "model")
        model.save_pretrained(str(out / "model"))
        weights_ref = "model"
    np.savez_compressed(out / "reference.npz", **reference_arrays(table, rng))  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    write_meta(
        out,
        {
            "weights": weights_ref,
            "base": base if base == "scratch" else str(Path(base).resolve()),
            "base_kind": "scratch" if base == "scratch" else ("fraudgen" if meta_base else "hf"),
            "load_4bit": bool(use_4bit),
            "grammar": grammar,
            "rows_per_line": _rows_per_line(encoded.lines),
            "training": {
                "rows": table.num_rows, "lines": len(encoded.lines), "steps": steps, "loss": loss_value,
                "seconds": round(seconds, 2), "lora": lora, "adapter": adapter if lora else None,
            },
        },
    )  # fmt: skip
    result = TrainResult(
        out_dir=str(out),
        base=base,
        lora=lora,
        adapter=adapter if lora else None,
        load_4bit=use_4bit,
        device=dev,
        rows=table.num_rows,
        lines=len(encoded.lines),
        tokens=int(lengths.sum()),
        steps=steps,
        seconds=round(seconds, 2),
        final_loss=loss_value,
        parameters=n_params,
        trainable_parameters=n_train,
    )
    log.info("llm.trained", **result.as_dict())
    return result


def _rows_per_line(lines: Any) -> dict[str, float]:
    out = {}
    for lab, name in enumerate(V.LABELS):
        sel = lines.label == lab
        if sel.any():
            out[name] = float(lines.rows[sel].mean())
    return out


def _fit(
    model: Any,
    tokens: np.ndarray,
    lengths: np.ndarray,
    device: str,
    max_steps: int,
    batch_size: int,
    lr: float,
    max_seconds: float | None,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Plain AdamW loop with linear warm-up and cosine decay; loss on every token after the label prompt."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, min(50, max_steps // 10))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, max_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    all_ids = torch.as_tensor(tokens, dtype=torch.long)
    mask_all = torch.as_tensor(np.arange(tokens.shape[1])[None, :] < lengths[:, None])
    labels_all = torch.where(mask_all, all_ids, torch.full_like(all_ids, -100))
    labels_all[:, :2] = -100  # <bos> and the label are the prompt, not something to learn
    model.train()
    started = time.perf_counter()
    n = tokens.shape[0]
    order = rng.permutation(n)
    cursor, step, ema = 0, 0, float("nan")
    while step < max_steps:
        if cursor + batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = torch.as_tensor(order[cursor : cursor + batch_size])
        cursor += batch_size
        width = int(lengths[idx.numpy()].max())
        out = model(
            input_ids=all_ids[idx, :width].to(device),
            attention_mask=mask_all[idx, :width].to(device).long(),
            labels=labels_all[idx, :width].to(device),
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        value = float(out.loss.detach())
        ema = value if math.isnan(ema) else 0.95 * ema + 0.05 * value
        step += 1
        if step % 100 == 0:
            log.info("llm.train_step", step=step, loss=round(ema, 4))
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            log.info("llm.train_time_budget_reached", step=step, seconds=max_seconds)
            break
    return step, round(ema, 4)
