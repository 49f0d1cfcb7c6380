"""Constrained batched sampling → parsed lines → world rows → per-row checks → rule fallback → report.

``generate_llm_table`` is what the API, the CLI and the pipeline call for ``engine="llm"``. Every sampled
token is drawn under the grammar DFA's mask (see :mod:`fraudgen.llm.grammar`), so lines always parse.
Rows are then checked with the contract and business rules; rows that still fail are replaced by rule
rows (``source="rules"``) and counted by reason. Rows that equal a training row (see
:mod:`fraudgen.llm.quality`) are dropped and re-sampled: the final table holds zero exact copies.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from pydantic import BaseModel, Field

from fraudgen.columnar import format_ids
from fraudgen.llm import vocab as V
from fraudgen.llm.checks import row_failures
from fraudgen.llm.codec import LineFields
from fraudgen.llm.fill import fill
from fraudgen.llm.grammar import Dfa, build_dfa
from fraudgen.llm.model import LoadedModel, load_model
from fraudgen.llm.quality import dcr, exact_copies, fidelity, row_features
from fraudgen.llm.tokens import from_tokens
from fraudgen.request import GenerationRequest
from fraudgen.schema import COLUMNS, SCENARIOS, TRANSACTION_SCHEMA
from fraudgen.simulate.engine import generate_shard, shard_context, transaction_prefix
from fraudgen.simulate.frame import IdContext, frame_to_arrow
from fraudgen.simulate.manifest import ShardSpec, build_manifest, world_seed
from fraudgen.world import COUNTRY_CODES, CURRENCY_CODES

log = structlog.get_logger(__name__)
MAX_LINE_TOKENS = 24
MAX_ROUNDS = 4


_SUMMED = (
    "rows", "llm_rows", "valid_before_fallback", "fallback_rows", "lines_sampled", "tokens_sampled",
    "exact_copies_dropped", "exact_copies", "codec_overrides",
)  # fmt: skip


class LlmReport(BaseModel):
    """What happened while generating: validity before fallback, fallbacks by reason, privacy, fidelity."""

    rows: int = 0
    llm_rows: int = Field(0, description="rows kept from the model, checked before fallback")
    valid_before_fallback: int = 0
    validity_rate: float = 1.0
    fallback_rows: int = 0
    fallback_by_reason: dict[str, int] = Field(default_factory=dict)
    lines_sampled: int = 0
    tokens_sampled: int = 0
    rounds: int = 0
    exact_copies_dropped: int = Field(0, description="rows equal to a training row, dropped and re-sampled")
    exact_copies: int = Field(0, description="rows equal to a training row in the final table (must be 0)")
    codec_overrides: int = 0
    label_rows: dict[str, int] = Field(default_factory=dict)
    dcr: dict[str, float] = Field(default_factory=dict)
    fidelity: dict[str, Any] = Field(default_factory=dict)
    validator: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0
    sample_seconds: float = 0.0
    model_dir: str = ""
    adapter: str | None = None
    device: str = "cpu"

    def merge(self, other: LlmReport) -> LlmReport:
        """Combine shard reports (sums; rates recomputed; DCR/fidelity kept from the first shard)."""
        out = self.model_copy(deep=True)
        for name in _SUMMED:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.rounds = max(self.rounds, other.rounds)
        out.fallback_by_reason = dict(Counter(self.fallback_by_reason) + Counter(other.fallback_by_reason))
        out.label_rows = dict(Counter(self.label_rows) + Counter(other.label_rows))
        out.validity_rate = out.valid_before_fallback / out.llm_rows if out.llm_rows else 1.0
        out.seconds, out.sample_seconds = (
            self.seconds + other.seconds,
            self.sample_seconds + other.sample_seconds,
        )
        return out


class LlmEngine:
    """A loaded model plus everything sampling needs (grammar, reference keys); thread-safe to call."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 512, temperature: float = 1.0) -> None:
        import torch

        self.loaded = loaded
        self.batch_size = batch_size
        self.temperature = temperature
        self.grammar = loaded.meta["grammar"]
        self.rows_per_line: dict[str, float] = loaded.meta.get("rows_per_line", {})
        ref = np.load(loaded.model_dir / "reference.npz")
        self.keys = ref["keys"]
        self.reference = {k.removeprefix("ref_"): ref[k] for k in ref.files if k.startswith("ref_")}
        self._ids = torch.as_tensor(loaded.ids, device=loaded.device)
        self._forward_params = _forward_params(loaded.model)
        self._dfas: dict[tuple[Any, ...], tuple[Dfa, Any, Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, adapter: str | None = None, device: str | None = None) -> LlmEngine:
        return cls(load_model(model_dir, adapter, device))

    # --- sampling -----------------------------------------------------------------------------------
    def dfa_for(self, request: GenerationRequest) -> tuple[Dfa, Any, Any]:
        import torch

        countries = [COUNTRY_CODES.index(c) for c in request.countries] if request.countries else None
        currency = CURRENCY_CODES.index(request.currency) if request.currency else None
        key = (tuple(countries) if countries else None, currency)
        if key not in self._dfas:
            dfa = build_dfa(self.grammar, countries, currency)
            dev = self.loaded.device
            self._dfas[key] = (
                dfa,
                torch.as_tensor(dfa.allowed, device=dev),
                torch.as_tensor(dfa.next, dtype=torch.long, device=dev),
            )
        return self._dfas[key]

    def sample_lines(
        self, labels: np.ndarray, seed: int, request: GenerationRequest
    ) -> tuple[LineFields, int]:
        """Sample one line per entry of ``labels`` (label indices); returns fields and tokens drawn."""
        dfa, allowed, nxt = self.dfa_for(request)
        missing = sorted({V.LABELS[i] for i in np.unique(labels) if dfa.start[i] < 0})
        if missing:
            raise ValueError(
                f"model {self.loaded.model_dir} was not trained on scenario(s) {', '.join(missing)}; "
                f"it knows: {', '.join(dfa.labels())}"
            )
        parts, tokens = [], 0
        for chunk, lo in enumerate(range(0, labels.size, self.batch_size)):
            lab = labels[lo : lo + self.batch_size]
            matrix = self._generate(lab, _seed(seed, chunk), dfa, allowed, nxt)
            tokens += int((matrix != V.L_EOS).sum()) + lab.size
            full = np.column_stack([np.full(lab.size, V.L_BOS), V.LABEL_TOKEN[lab], matrix])
            parts.append(from_tokens(full))
        return LineFields.concat(parts), tokens

    def sample_text(self, scenario: str, n: int, seed: int = 0) -> list[str]:
        """``n`` raw lines for one prompt (``legit`` or a scenario name) — for inspection and previews."""
        from fraudgen.llm.tokens import to_text, to_tokens

        labels = np.full(n, V.label_index(scenario), np.int64)
        lines, _ = self.sample_lines(labels, seed, GenerationRequest(rows=max(n, 1)))
        return to_text(*to_tokens(lines))

    def _generate(self, labels: np.ndarray, seed: int, dfa: Dfa, allowed: Any, nxt: Any) -> np.ndarray:
        import torch

        model, dev, ids = self.loaded.model, self.loaded.device, self._ids
        gen = torch.Generator(device=dev).manual_seed(seed)
        lab = torch.as_tensor(labels, device=dev)
        prompt = torch.stack(
            [ids[V.L_BOS].expand(lab.shape[0]), ids[torch.as_tensor(V.LABEL_TOKEN, device=dev)[lab]]], 1
        )
        state = torch.as_tensor(dfa.start, device=dev)[lab]
        out: list[Any] = []
        past, inputs = None, prompt
        kwargs: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = 1
        cache_arg = "cache" if "cache" in self._forward_params else "past_key_values"
        with self._lock, torch.inference_mode():
            for _ in range(MAX_LINE_TOKENS):
                result = model(input_ids=inputs, **{cache_arg: past}, **kwargs)
                past = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
                logits = result.logits[:, -1, :].index_select(1, ids).float() / self.temperature
                logits = logits.masked_fill(~allowed[state], float("-inf"))
                local = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
                state = nxt[state, local]
                out.append(local)
                if bool((state == dfa.done).all()):
                    break
                inputs = ids[local].unsqueeze(1)
        if not bool((state == dfa.done).all()):
            raise RuntimeError(f"sampling did not finish lines within {MAX_LINE_TOKENS} tokens")
        return torch.stack(out, 1).cpu().numpy()

    # --- one shard ------------------------------------------------------------------------------------
    def generate_shard(self, request: GenerationRequest, spec: ShardSpec) -> tuple[pa.Table, LlmReport]:
        started = time.perf_counter()
        quota = np.zeros(len(V.LABELS), np.int64)
        quota[1:] = spec.fraud_quota
        quota[0] = spec.rows - quota[1:].sum()
        streams = np.random.SeedSequence([*spec.entropy, 0x11A]).spawn(MAX_ROUNDS + 1)
        ctx = shard_context(request, spec)
        ids = IdContext(world_seed(request), request.resolved_batch_id, request.tenant_id, "llm", "")
        report = LlmReport(
            model_dir=str(self.loaded.model_dir), adapter=self.loaded.adapter, device=self.loaded.device
        )
        kept: list[pa.Table] = []
        deficit = quota.copy()
        sample_seconds = 0.0
        for round_no in range(MAX_ROUNDS):
            if deficit.sum() == 0:
                break
            report.rounds = round_no + 1
            rng = np.random.default_rng(streams[round_no])
            labels = self._labels_for(deficit, round_no)
            t0 = time.perf_counter()
            lines, tokens = self.sample_lines(labels, _seed(spec.entropy[0], spec.index, round_no), request)
            sample_seconds += time.perf_counter() - t0
            report.lines_sampled += len(lines)
            report.tokens_sampled += tokens
            lines = _select(lines, deficit)
            filled = fill(lines, ctx, rng, case_offset=round_no * 1_000_000)
            report.codec_overrides += filled.overrides
            table = frame_to_arrow(filled.frame, ids)
            copies = exact_copies(row_features(table), self.keys)
            bad_lines = np.unique(filled.line_of_row[copies])
            keep = ~np.isin(filled.line_of_row, bad_lines)
            report.exact_copies_dropped += int(copies.sum())
            table = table.filter(pa.array(keep))
            label = row_features(table)["label"]
            deficit -= np.bincount(label, minlength=len(V.LABELS))
            kept.append(table)
        table = pa.concat_tables(kept) if kept else TRANSACTION_SCHEMA.empty_table()
        reasons = row_failures(table, request)
        bad = reasons != ""
        report.llm_rows = table.num_rows
        report.valid_before_fallback = int(table.num_rows - bad.sum())
        report.validity_rate = report.valid_before_fallback / table.num_rows if table.num_rows else 1.0
        by_reason = Counter(reasons[bad].tolist())
        label = row_features(table)["label"]
        need = np.bincount(label[bad], minlength=len(V.LABELS)) + np.maximum(deficit, 0)
        if np.maximum(deficit, 0).sum():  # copies not re-sampled in time, or an odd quota of 2-row lines
            by_reason["quota_unfilled"] += int(np.maximum(deficit, 0).sum())
        table = table.filter(pa.array(~bad))
        table = _renumber(table, transaction_prefix(request, spec.index).replace("t", "l", 1))
        if need.sum():
            table = pa.concat_tables([table, _rule_rows(request, spec, need, by_reason)])
        table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))
        report.fallback_rows = int(need.sum())
        report.fallback_by_reason = {k: int(v) for k, v in sorted(by_reason.items())}
        report.rows = table.num_rows
        features = row_features(table)
        report.exact_copies = int(exact_copies(features, self.keys).sum())
        report.label_rows = {
            V.LABELS[i]: int(c)
            for i, c in enumerate(np.bincount(features["label"], minlength=len(V.LABELS)))
            if c
        }
        report.dcr = dcr(features, self.reference)
        report.fidelity = fidelity(features, self.reference)
        report.sample_seconds = round(sample_seconds, 3)
        report.seconds = round(time.perf_counter() - started, 3)
        return table, report

    def _labels_for(self, deficit: np.ndarray, round_no: int) -> np.ndarray:
        """Labels to prompt: enough lines for each label's missing rows, with head-room for selection."""
        counts = []
        for i, rows in enumerate(deficit):
            per_line = self.rows_per_line.get(V.LABELS[i], 1.0)
            counts.append(0 if rows <= 0 else math.ceil(rows / per_line * (1.15 + 0.25 * round_no)) + 3)
        return np.repeat(np.arange(len(V.LABELS)), counts)


def _forward_params(model: Any) -> set[str]:
    """Keyword names the model's forward accepts (a PEFT wrapper forwards to its base model)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _seed(*parts: int) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _select(lines: LineFields, deficit: np.ndarray) -> LineFields:
    """Per label, the first lines whose rows add up to exactly the deficit (a 2-row line never straddles
    the end); a label's leading continuation lines are skipped so every case starts with an S line."""
    chosen: list[np.ndarray] = []
    for lab in range(len(V.LABELS)):
        idx = np.flatnonzero(lines.label == lab)
        if deficit[lab] <= 0 or idx.size == 0:
            continue
        first_s = np.flatnonzero(lines.start[idx])
        idx = idx[first_s[0] :] if first_s.size else idx[:0]
        rows = lines.rows[idx]
        total = np.cumsum(rows)
        take = total <= deficit[lab]
        picked = idx[take]
        short = int(deficit[lab] - rows[take].sum())
        if short > 0:  # fill the last row(s) with single-row lines after the cut
            rest = idx[~take][rows[~take] == 1][:short]
            picked = np.sort(np.r_[picked, rest])
        chosen.append(picked)
    return lines.take(np.concatenate(chosen) if chosen else np.zeros(0, np.int64))


def _renumber(table: pa.Table, prefix: str) -> pa.Table:
    """LLM rows get ids ``l<tag>_<shard>_<row>`` in time order (rule fallback rows keep their ``t`` ids)."""
    table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))
    ids = format_ids(prefix, np.arange(table.num_rows, dtype=np.int64), 9)
    return table.set_column(COLUMNS.index("transaction_id"), TRANSACTION_SCHEMA.field("transaction_id"), ids)


def _rule_rows(
    request: GenerationRequest, spec: ShardSpec, need: np.ndarray, reasons: Counter[str]
) -> pa.Table:
    """Rule-engine rows of the same shard, by label, to replace generated rows (never chargebacks, whose
    purchase might not come along)."""
    rules = generate_shard(request, spec)
    label = row_features(rules)["label"]
    not_cb = np.asarray(pc.not_equal(rules.column("transaction_type"), "chargeback"))
    picks = []
    for lab in np.flatnonzero(need):
        candidates = np.flatnonzero((label == lab) & not_cb)
        if candidates.size < need[lab]:
            short = int(need[lab] - candidates.size)
            reasons[f"fallback_short_{V.LABELS[lab]}"] += short
            candidates = np.r_[candidates, np.flatnonzero((label == 0) & not_cb)[:short]]
        picks.append(candidates[: need[lab]])
    return rules.take(pa.array(np.sort(np.concatenate(picks))))


# --- public API -----------------------------------------------------------------------------------------

_ENGINES: OrderedDict[tuple[str, str | None, str | None], LlmEngine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


def get_engine(model_dir: str | Path, adapter: str | None = None, device: str | None = None) -> LlmEngine:
    """A cached engine per (model dir, adapter, device): loading is the slow part of small requests."""
    key = (str(Path(model_dir).resolve()), adapter, device)
    with _ENGINES_LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
    engine = LlmEngine.load(model_dir, adapter, device)
    with _ENGINES_LOCK:
        _ENGINES[key] = engine
        while len(_ENGINES) > 4:
            _ENGINES.popitem(last=False)
    return engine


def generate_llm_table(
    request: GenerationRequest,
    model_dir: str,
    adapter: str | None = None,
    device: str | None = None,
    *,
    validate: bool = True,
) -> tuple[pa.Table, LlmReport]:
    """A contract table for ``request`` from the model in ``model_dir`` (all shards of the manifest).

    Rows from the model have ``source="llm"``; rows that failed the checks were replaced by rule rows
    (``source="rules"``), counted in the report. ``validate`` also runs ``fraudgen.validate`` on the
    final table and puts its verdict in ``report.validator``.
    """
    engine = get_engine(model_dir, adapter, device)
    tables, report = [], None
    for spec in build_manifest(request):
        table, shard_report = engine.generate_shard(request, spec)
        tables.append(table)
        report = shard_report if report is None else report.merge(shard_report)
    assert report is not None
    table = pa.concat_tables(tables)
    if validate:
        report.validator = _validator_summary(table, request)
    log.info(
        "llm.generated",
        rows=report.rows,
        validity=round(report.validity_rate, 5),
        fallback=report.fallback_rows,
    )
    return table, report


def _validator_summary(table: pa.Table, request: GenerationRequest) -> dict[str, Any]:
    from fraudgen.validate.gates import GateConfig
    from fraudgen.validate.stage import validate_table

    gates = GateConfig(reference_rows=5_000, sample_size=max(500, min(table.num_rows, 20_000)))
    report = validate_table(table, gates, window=(request.start, request.end))
    rules = {k: v["count"] for k, v in report.checks.items() if k.startswith(("rules.", "schema."))}
    return {
        "passed": report.passed,
        "failures": [f.gate for f in report.failures],
        "rule_and_schema_checks": rules,
        "rule_violations": report.metrics.get("rule_violations"),
        "schema_errors": report.metrics.get("schema_errors"),
    }


__all__ = ["SCENARIOS", "LlmEngine", "LlmReport", "generate_llm_table", "get_engine"]
