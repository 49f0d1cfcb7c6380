"""LLM engine end to end on CPU: train a tiny model once, sample, adapters, HF-shaped bases, bad input.

Nothing is downloaded: the hub is switched off and every model is built locally.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores: more threads only contend

from fraudgen.config import Settings  # noqa: E402
from fraudgen.llm import sample as sample_mod  # noqa: E402
from fraudgen.llm.command import llm_sample_command, llm_train_command  # noqa: E402
from fraudgen.llm.quality import row_features  # noqa: E402
from fraudgen.llm.sample import LlmEngine, generate_llm_table  # noqa: E402
from fraudgen.llm.train import train_model  # noqa: E402
from fraudgen.request import GenerationRequest  # noqa: E402
from fraudgen.schema import SCENARIOS, TRANSACTION_SCHEMA  # noqa: E402
from fraudgen.simulate.engine import generate_table  # noqa: E402
from fraudgen.simulate.manifest import build_manifest  # noqa: E402

SAMPLE = GenerationRequest(rows=2_000, seed=11, fraud_rate=0.3)


@pytest.fixture(scope="module")
def training_table():
    return generate_table(GenerationRequest(rows=20_000, seed=1, fraud_rate=0.3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, training_table):
    out = tmp_path_factory.mktemp("llm") / "model"
    result = train_model(training_table, out, max_steps=600, seed=0, max_seconds=150)
    return out, result


@pytest.fixture(scope="module")
def sampled(trained):
    return generate_llm_table(SAMPLE, str(trained[0]))


def test_scratch_model_trains_on_20k_rows_within_three_minutes(trained) -> None:
    _, result = trained
    print(json.dumps(result.as_dict()))
    assert result.rows == 20_000 and result.steps > 50
    assert result.seconds < 180
    assert result.final_loss < 2.6  # uniform over the row alphabet would be ~5.9


def test_sample_2000_rows_valid_labelled_and_not_copied(sampled) -> None:
    table, report = sampled
    print(report.model_dump_json())
    assert table.schema.equals(TRANSACTION_SCHEMA, check_metadata=False)
    assert table.num_rows == 2_000 and report.rows == 2_000
    assert report.validity_rate >= 0.99
    assert report.exact_copies == 0
    assert pc.count_distinct(table.column("transaction_id")).as_py() == 2_000
    # every scenario present, with exactly the rows the request asks for, labelled consistently
    quota = np.sum([spec.fraud_quota for spec in build_manifest(SAMPLE)], axis=0)
    counts = {name: pc.sum(pc.equal(table.column("fraud_scenario"), name)).as_py() for name in SCENARIOS}
    assert counts == {name: int(q) for name, q in zip(SCENARIOS, quota, strict=True)}
    assert np.array_equal(
        np.asarray(table.column("is_fraud")), np.asarray(pc.is_valid(table.column("fraud_scenario")))
    )
    llm = pc.sum(pc.equal(table.column("source"), "llm")).as_py()
    assert llm == 2_000 - report.fallback_rows and llm >= 0.99 * 2_000
    # fidelity and privacy figures are reported
    for feature in ("amount", "hour"):
        figures = report.fidelity[feature]
        assert 0.0 <= figures["ks"] <= 1.0 and figures["ad"] is not None
    assert report.dcr["median"] > 0
    # the batch validator finds no rule or schema violations
    assert report.validator["rule_violations"] == 0 and report.validator["schema_errors"] == 0


def test_same_seed_same_table(trained, sampled) -> None:
    again, _ = generate_llm_table(SAMPLE, str(trained[0]))
    assert again.equals(sampled[0])
    other, _ = generate_llm_table(SAMPLE.model_copy(update={"seed": 12}), str(trained[0]))
    assert not other.column("amount").equals(sampled[0].column("amount"))


def test_request_country_and_currency_are_honoured(trained) -> None:
    request = GenerationRequest(rows=300, seed=2, fraud_rate=0.2, countries=["FR", "DE"], currency="EUR")
    table, report = generate_llm_table(request, str(trained[0]), validate=False)
    assert set(table.column("country").to_pylist()) <= {"FR", "DE"}
    assert set(table.column("currency").to_pylist()) == {"EUR"}
    assert report.validity_rate >= 0.99


def test_lora_adapter_round_trip_gives_identical_samples(trained, training_table, tmp_path) -> None:
    base, _ = trained
    tenant = training_table.slice(0, 4_000)
    result = train_model(
        tenant, tmp_path / "tenant", base=str(base), lora=True, adapter="acme", max_steps=20, seed=1
    )
    assert result.lora and result.trainable_parameters < result.parameters / 5
    assert (tmp_path / "tenant" / "adapters" / "acme" / "adapter_config.json").is_file()
    request = GenerationRequest(rows=400, seed=5, fraud_rate=0.3)
    first, _ = generate_llm_table(request, str(tmp_path / "tenant"), adapter="acme", validate=False)
    sample_mod._ENGINES.clear()  # force a fresh load from disk
    second, _ = generate_llm_table(request, str(tmp_path / "tenant"), adapter="acme", validate=False)
    assert first.equals(second)
    with pytest.raises(FileNotFoundError, match="adapter 'nope' not found"):
        generate_llm_table(request, str(tmp_path / "tenant"), adapter="nope")
    # a corrupt adapter fails loudly, naming it
    shutil.copytree(tmp_path / "tenant" / "adapters" / "acme", tmp_path / "tenant" / "adapters" / "broken")
    for weights in (tmp_path / "tenant" / "adapters" / "broken").glob("adapter_model.*"):
        weights.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="adapter 'broken'"):
        generate_llm_table(request, str(tmp_path / "tenant"), adapter="broken")


def _dialogpt_like(path: Path) -> Path:
    """A GPT-2-architecture directory like DialoGPT-small (shrunk), with a byte-level BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = ["hello how are you", "i am fine thank you", "what a nice day"] * 50
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<|endoftext|>"])
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.save_pretrained(str(path))
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_ctx=64, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


def test_hf_causal_lm_directory_loads_fine_tunes_and_samples(training_table, tmp_path) -> None:
    base = _dialogpt_like(tmp_path / "dialogpt-small-like")
    out = tmp_path / "hf"
    result = train_model(
        training_table.slice(0, 3_000), out, base=str(base), lora=True, adapter="t1", max_steps=10
    )
    assert result.lora
    table, report = generate_llm_table(
        GenerationRequest(rows=300, seed=1, fraud_rate=0.3), str(out), adapter="t1"
    )
    assert table.num_rows == 300 and report.validity_rate >= 0.99
    assert report.validator["rule_violations"] == 0
    # the same base, fully fine-tuned (no LoRA), through the same path; 4-bit on CPU loads full precision
    full = train_model(
        training_table.slice(0, 2_000), tmp_path / "full", base=str(base), load_4bit=True, max_steps=5
    )
    assert not full.load_4bit
    table, _ = generate_llm_table(GenerationRequest(rows=100, seed=1), str(tmp_path / "full"), validate=False)
    assert table.num_rows == 100


def test_bad_inputs_are_named(trained, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        generate_llm_table(SAMPLE, str(tmp_path / "does-not-exist"))
    with pytest.raises(FileNotFoundError, match="neither 'scratch'"):
        train_model(
            generate_table(GenerationRequest(rows=1_000)), tmp_path / "x", base=str(tmp_path / "missing")
        )
    with pytest.raises(ValueError, match="needs a pretrained base"):
        train_model(generate_table(GenerationRequest(rows=1_000)), tmp_path / "x", lora=True)
    with pytest.raises(ValueError, match="--load-4bit"):
        train_model(generate_table(GenerationRequest(rows=1_000)), tmp_path / "x", load_4bit=True)
    engine = LlmEngine.load(trained[0])
    with pytest.raises(ValueError, match="unknown scenario 'crypto_scam'"):
        engine.sample_text("crypto_scam", 3)
    lines = engine.sample_text("phishing", 3, seed=1)
    assert all(line.startswith("<bos> @phishing ") and "T:transfer/" in line for line in lines)


def test_model_trained_without_a_scenario_refuses_it(tmp_path) -> None:
    legit_only = generate_table(GenerationRequest(rows=1_500, fraud_rate=0.0))
    train_model(legit_only, tmp_path / "legit", max_steps=2)
    with pytest.raises(ValueError, match=r"not trained on scenario.*card_testing"):
        generate_llm_table(GenerationRequest(rows=500, fraud_rate=0.2), str(tmp_path / "legit"))


def test_commands_exit_codes(trained, tmp_path, capsys) -> None:
    settings = Settings(llm_train_steps=2)
    assert (
        llm_train_command(str(tmp_path / "nothing"), str(tmp_path / "m"), "scratch", False, False, settings)
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert llm_sample_command(str(trained[0]), 200, 3, str(tmp_path / "out"), settings) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] == 200 and report["exact_copies"] == 0
    written = list((tmp_path / "out").rglob("*.parquet"))
    assert len(written) == 1
    assert llm_train_command(str(written[0]), str(tmp_path / "m"), "scratch", False, False, settings) == 0
    assert row_features  # the quality helpers are importable without a model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_sampling_and_4bit(trained, tmp_path) -> None:
    table, report = generate_llm_table(SAMPLE, str(trained[0]), device="cuda")
    assert report.device.startswith("cuda") and report.validity_rate >= 0.99 and table.num_rows == 2_000
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pytest.skip("bitsandbytes not installed")
    base = _dialogpt_like(tmp_path / "base")
    result = train_model(generate_table(SAMPLE), tmp_path / "q", base=str(base), lora=True, load_4bit=True,
                         max_steps=5, device="cuda")  # fmt: skip
    assert result.load_4bit


def test_ray_data_actor_pool_matches_in_process(trained, ray_session) -> None:
    import ray

    from fraudgen.llm.batch import LlmShardGenerator, llm_compute

    request = GenerationRequest(rows=2_400, seed=4, fraud_rate=0.2, shard_rows=1_000)
    specs = build_manifest(request)
    assert len(specs) == 3
    ds = ray.data.from_items([{"spec": s.model_dump_json()} for s in specs], override_num_blocks=len(specs))
    ds = ds.map_batches(
        LlmShardGenerator,
        batch_size=1,
        fn_constructor_kwargs={"model_dir": str(trained[0]), "request_json": request.model_dump_json()},
        **llm_compute(actors=1, device="cpu"),
    )
    got = ray.data.Dataset.to_arrow_refs(ds)
    table = pa.concat_tables(ray.get(got))
    expected, _ = generate_llm_table(request, str(trained[0]), validate=False)
    key = [("transaction_id", "ascending")]
    assert table.num_rows == 2_400
    assert table.sort_by(key).equals(expected.sort_by(key))
