"""Model directories: scratch GPT-2-style config, any local HF causal LM, 4-bit on CUDA, LoRA adapters.

A fraudgen model directory holds ``fraudgen_model.json`` (what the base is, the learnt grammar, training
facts), ``tokenizer/``, ``model/`` (when the weights were trained here) and ``adapters/<name>/`` (PEFT
LoRA adapters, one per tenant or scenario, loaded by name). Nothing is ever fetched from a hub: every
load is ``local_files_only`` and an unknown path fails naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from fraudgen.llm.tokenizer import extend_tokenizer, load_tokenizer, token_ids

log = structlog.get_logger(__name__)

META_FILE = "fraudgen_model.json"
FORMAT = 1
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Identifier columns replaced by a salted HMAC before any training (relations survive, values do not).
PSEUDONYMISED = (
    "transaction_id", "user_id", "account_id", "card_id", "merchant_id", "counterparty_id", "device_id",
    "ip_address", "fraud_case_id",
)  # fmt: skip


def pseudonymise(table: pa.Table, key: bytes) -> pa.Table:
    """Replace every reference identifier by ``HMAC-SHA256(key, value)`` (hex, 20 chars).

    Equal values stay equal (so chargeback ↔ purchase pairing and case grouping survive) while nothing of
    the reference data's ids reaches the model directory. One HMAC per *distinct* value.
    """
    if len(key) < 16:
        raise ValueError("pseudonymisation key must be at least 16 bytes")
    for name in PSEUDONYMISED:
        column = table.column(name).combine_chunks()
        encoded = column.dictionary_encode()
        mapped = pa.array(
            [
                hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:20]
                for v in encoded.dictionary.to_pylist()
            ],
            pa.string(),
        )
        values = pc.take(mapped, encoded.indices)
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), values)
    return table


def resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def scratch_config(vocab_size: int, n_layer: int = 2, n_embd: int = 128, n_head: int = 4) -> Any:
    """A small GPT-2-style config sized for ~15-token lines (n_positions 32)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip


def _bnb_config() -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "--load-4bit on CUDA needs bitsandbytes, which is not installed (pip install 'fraudgen[gpu]')"
        ) from exc
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_causal_lm(path: str | Path, device: str, load_4bit: bool = False) -> Any:
    """Load a local HF causal LM directory; 4-bit NF4 via bitsandbytes when asked for on CUDA."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"model path {str(path)!r} is not a local Hugging Face model directory (no config.json)"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if load_4bit and device.startswith("cuda"):
        kwargs["quantization_config"] = _bnb_config()
        kwargs["device_map"] = {"": device}
        return AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    if load_4bit:
        log.warning(
            "llm.load_4bit_ignored", reason="4-bit quantisation needs CUDA; loading full precision on CPU"
        )
    model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    return model.to(device)  # type: ignore[arg-type]


def is_fraudgen_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    p = Path(model_dir)
    if not p.exists():
        raise FileNotFoundError(f"model path {str(model_dir)!r} does not exist")
    if not (p / META_FILE).is_file():
        raise FileNotFoundError(
            f"model path {str(model_dir)!r} is not a fraudgen model directory (no {META_FILE})"
        )
    meta: dict[str, Any] = json.loads((p / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p / META_FILE}: unsupported format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def write_meta(model_dir: Path, meta: dict[str, Any]) -> None:
    meta = {"format": FORMAT, **meta}
    tmp = model_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    tmp.replace(model_dir / META_FILE)


def base_weights_path(model_dir: Path, meta: dict[str, Any]) -> Path:
    base = Path(meta["weights"])
    return base if base.is_absolute() else model_dir / base


def check_adapter_name(name: str) -> str:
    if not ADAPTER_NAME.match(name):
        raise ValueError(f"adapter name {name!r} must match {ADAPTER_NAME.pattern}")
    return name


def list_adapters(model_dir: str | Path) -> list[str]:
    root = Path(model_dir) / "adapters"
    return (
        sorted(p.name for p in root.iterdir() if (p / "adapter_config.json").is_file())
        if root.is_dir()
        else []
    )


@dataclass
class LoadedModel:
    """A model ready to sample: torch module, local→model token ids, grammar, metadata."""

    model: Any
    ids: np.ndarray
    meta: dict[str, Any]
    device: str
    adapter: str | None
    model_dir: Path


def load_model(model_dir: str | Path, adapter: str | None = None, device: str | None = None) -> LoadedModel:
    """Load a fraudgen model directory (and one adapter by name) for sampling."""
    root = Path(model_dir)
    meta = read_meta(root)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(root / "tokenizer")
    model = load_causal_lm(
        base_weights_path(root, meta), dev, load_4bit=bool(meta.get("load_4bit")) and dev != "cpu"
    )
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        resize_embeddings(model, len(tokenizer))
    if adapter is not None:
        model = attach_adapter(model, root, adapter)
    model.eval()
    return LoadedModel(model, token_ids(tokenizer), meta, dev, adapter, root)


def resize_embeddings(model: Any, size: int) -> None:
    """Grow the vocabulary for the row tokens; seeded, so every load of a base starts from the same rows."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.resize_token_embeddings(size, mean_resizing=False)


def attach_adapter(model: Any, model_dir: Path, adapter: str) -> Any:
    from peft import PeftModel

    check_adapter_name(adapter)
    path = model_dir / "adapters" / adapter
    if not (path / "adapter_config.json").is_file():
        known = ", ".join(list_adapters(model_dir)) or "none"
        raise FileNotFoundError(
            f"adapter {adapter!r} not found under {model_dir / 'adapters'} (known: {known})"
        )
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # corrupt weights or config: say which adapter and why
        raise ValueError(
            f"adapter {adapter!r} at {path} cannot be loaded (corrupt or incompatible): {exc}"
        ) from exc


def lora_model(model: Any, added_tokens: list[int], load_4bit: bool, r: int = 8) -> Any:
    """Wrap a model with a LoRA adapter (QLoRA when 4-bit); new row tokens get trainable embeddings."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if load_4bit:
        model = prepare_model_for_kbit_training(model)
    gpt2 = getattr(model.config, "model_type", "") == "gpt2"
    attn = [m for name, m in model.named_modules() if name.endswith("c_attn")]
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=["c_attn"] if gpt2 else "all-linear",
        task_type="CAUSAL_LM",
        fan_in_fan_out=bool(attn) and type(attn[0]).__name__ == "Conv1D",
        trainable_token_indices=added_tokens or None,
    )
    return get_peft_model(model, config)


def prepare_tokenizer(base: str, out_dir: Path, corpus: list[str]) -> tuple[Any, list[int], str | None]:
    """The tokenizer for a training run and the ids it added; also the weights path of the base."""
    from fraudgen.llm.tokenizer import train_tokenizer

    if base == "scratch":
        return train_tokenizer(corpus), [], None
    p = Path(base)
    if is_fraudgen_dir(p):
        meta = read_meta(p)
        return load_tokenizer(p / "tokenizer"), [], str(base_weights_path(p, meta).resolve())
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"base model {base!r} is neither 'scratch', a fraudgen model directory nor a local Hugging Face "
            "model directory (hub downloads are disabled)"
        )
    tokenizer = load_tokenizer(p)
    before = len(tokenizer)
    extend_tokenizer(tokenizer)
    return tokenizer, list(range(before, len(tokenizer))), str(p.resolve())
