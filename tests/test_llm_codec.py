"""Codec, grammar and pseudonymisation: fast tests without a model."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from fraudgen.llm import vocab as V
from fraudgen.llm.codec import decode_table, encode_table
from fraudgen.llm.grammar import build_dfa, learn_grammar
from fraudgen.llm.model import PSEUDONYMISED, pseudonymise
from fraudgen.llm.tokens import from_text, from_tokens, to_text, to_tokens
from fraudgen.request import GenerationRequest
from fraudgen.schema import SCENARIOS, TRANSACTION_TYPES
from fraudgen.simulate.engine import generate_table


@pytest.fixture(scope="module")
def table():
    return generate_table(GenerationRequest(rows=8_000, seed=3, fraud_rate=0.3))


def test_round_trip_through_text_is_lossless(table) -> None:
    encoded = encode_table(table)
    matrix, lengths = to_tokens(encoded.lines)
    text = to_text(matrix, lengths)
    assert text[0].startswith("<bos> @") and text[0].endswith("<eos>")
    assert lengths.mean() < 17, "lines must stay short for fast training"
    back = decode_table(from_text(text), encoded.context)
    assert back.equals(table)
    # chargebacks are encoded with their purchase implied: fewer lines than rows, 2 rows per such line
    assert len(encoded.lines) < table.num_rows
    assert int(encoded.lines.rows.sum()) == table.num_rows


def test_every_training_line_is_grammatical_and_labels_stay_in_their_lane(table) -> None:
    lines = encode_table(table).lines
    matrix, _ = to_tokens(lines)
    dfa = build_dfa(learn_grammar(lines))
    state = dfa.start[lines.label]
    ok = np.ones(len(lines), bool)
    for j in range(2, matrix.shape[1]):
        tok = matrix[:, j]
        active = tok != V.L_PAD
        ok &= dfa.allowed[state, tok] | ~active
        state = np.where(active, dfa.next[state, tok], state)
    assert ok.all() and (state == dfa.done).all()
    # card testing may only continue with an ecommerce purchase; laundering amounts stay < 10,000.00
    ct = dfa.allowed[dfa.next[dfa.start[V.label_index("card_testing")], V.INDEX["S"]]]
    assert [V.TOKENS[i] for i in np.flatnonzero(ct)] == ["T:purchase/ecommerce"]
    ml = learn_grammar(lines)["labels"]["money_laundering"]
    assert all(spec["mag"][1] <= 6 for spec in ml["combos"].values())


def test_request_restrictions_reach_the_grammar(table) -> None:
    grammar = learn_grammar(encode_table(table).lines)
    dfa = build_dfa(grammar, countries=[4], currency=3)  # FR, EUR
    cty = [i for i in range(len(V.TOKENS)) if V.KIND[i] == V.K_CTY]
    cur = [i for i in range(len(V.TOKENS)) if V.KIND[i] == V.K_CUR]
    assert {V.TOKENS[i] for i in cty if dfa.allowed[:, i].any()} == {"FR"}
    assert {V.TOKENS[i] for i in cur if dfa.allowed[:, i].any()} == {"EUR"}


def test_token_matrix_parse_matches_fields(table) -> None:
    lines = encode_table(table).lines
    matrix, _ = to_tokens(lines)
    back = from_tokens(matrix)
    for name in (
        "label",
        "start",
        "ttype",
        "channel",
        "status",
        "cents",
        "currency",
        "country",
        "mcc",
        "delay",
    ):
        assert np.array_equal(getattr(back, name), getattr(lines, name)), name
    assert set(np.unique(lines.label)) == set(range(len(SCENARIOS) + 1))
    assert (lines.delay[lines.ttype == TRANSACTION_TYPES.index("chargeback")] >= -1).all()


def test_bad_text_and_unknown_scenario_are_named() -> None:
    with pytest.raises(ValueError, match="unknown token 'bogus'"):
        from_text(["<bos> @legit S bogus <eos>"])
    with pytest.raises(ValueError, match="unknown scenario 'crypto_scam'"):
        V.label_index("crypto_scam")


def test_pseudonymise_keeps_relations_and_hides_values(table) -> None:
    out = pseudonymise(table, b"k" * 32)
    for name in PSEUDONYMISED:
        before, after = table.column(name), out.column(name)
        assert after.null_count == before.null_count
        assert pc.count_distinct(after).as_py() == pc.count_distinct(before).as_py()
        overlap = set(before.drop_null().to_pylist()[:200]) & set(after.drop_null().to_pylist())
        assert not overlap, name
    assert pseudonymise(table, b"k" * 32).equals(out)
    assert not pseudonymise(table, b"z" * 32).column("user_id").equals(out.column("user_id"))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pseudonymise(table, b"short")
