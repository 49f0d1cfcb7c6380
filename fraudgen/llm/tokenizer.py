"""Tokenizers: one trained locally with ``tokenizers`` for scratch models, or any HF tokenizer extended
with the row alphabet. Either way the engine only needs ``local token → model id``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from fraudgen.llm import vocab as V


def train_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on the training lines (ids by frequency, frequent tokens first).

    The full row alphabet is appended to the corpus once, so a value the training data never showed
    (an hour, a currency) still has an id: the grammar, not the tokenizer, decides what may be sampled.
    """
    tok = Tokenizer(models.WordLevel(unk_token=V.PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=[V.PAD, V.BOS, V.EOS], min_frequency=1)

    def lines() -> Iterable[str]:
        yield from corpus
        yield " ".join(V.TOKENS)

    tok.train_from_iterator(lines(), trainer=trainer)
    # the trainer may leave gaps in the ids; the model's embedding needs exactly len(vocab) contiguous ids
    ranked = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    tok = Tokenizer(models.WordLevel({t: i for i, (t, _) in enumerate(ranked)}, unk_token=V.PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=V.PAD, bos_token=V.BOS, eos_token=V.EOS)
    missing = [t for t in V.TOKENS if t not in fast.get_vocab()]
    if missing:
        raise RuntimeError(f"trained tokenizer lacks row tokens: {missing[:5]}")
    return fast


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the row alphabet to a pretrained tokenizer as whole tokens; returns how many were added."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in V.TOKENS if t not in vocab]
    return int(tokenizer.add_tokens(missing)) if missing else 0


def token_ids(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Model id of every local token (index = :data:`vocab.TOKENS` position)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in V.TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks row tokens {missing[:5]}…; was the model trained by fraudgen?")
    return np.array([vocab[t] for t in V.TOKENS], np.int64)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
