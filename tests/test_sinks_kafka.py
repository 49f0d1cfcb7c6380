"""Kafka sink against a real Kafka-protocol broker (tansu): signed publish, verifying consumer, rejections."""

from __future__ import annotations

import hmac
import json
import os

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from fraudgen.config import Settings
from fraudgen.schema import Transaction, table_to_models
from fraudgen.sinks import kafka as ks
from fraudgen.sinks import kafka_verify as kv
from fraudgen.sinks.signing import sign, sign_values, verify

pytestmark = pytest.mark.services
KEY = b"test-hmac-key-0123456789abcdef"


def _topic() -> str:
    return f"t-{os.urandom(4).hex()}"


def test_signature_is_rfc2104_hmac_over_key_id_and_value() -> None:
    for key in (b"k", b"x" * 64, b"y" * 100):
        values = [b"", b'{"a":1}', os.urandom(700)]
        expected = [hmac.new(key, b"kid\n" + v, "sha256").hexdigest() for v in values]
        assert [s.decode() for s in sign_values(values, key, "kid")] == expected
        assert [sign(v, key, "kid") for v in values] == expected
    assert verify(b"v", sign(b"v", KEY, "a"), KEY, "a")
    assert not verify(b"v", sign(b"v", KEY, "a"), KEY, "b")  # the key id is bound into the MAC
    with pytest.raises(ValueError):
        sign(b"v", b"", "a")


def test_json_values_round_trip_to_the_contract(make_batch) -> None:
    _, _, table = make_batch(3_000, seed=21, files=1)
    values = ks.json_values(table).to_pylist()
    parsed = [Transaction.model_validate(json.loads(v)) for v in values]
    assert parsed == table_to_models(table)
    assert json.loads(values[0])["amount"] == f"{table.column('amount')[0].as_py():.2f}"


def test_json_values_escape_awkward_strings(make_batch) -> None:
    _, _, table = make_batch(1_000, seed=22, files=1)
    odd = 'dev"ice\\\n\t\x01é'
    idx = table.schema.get_field_index("device_id")
    table = table.set_column(idx, "device_id", pa.array([odd] * table.num_rows, pa.string()))
    assert json.loads(ks.json_values(table)[5].as_py())["device_id"] == odd


def test_publish_then_verified_consume(kafka_bootstrap: str, make_batch) -> None:
    topic = _topic()
    ks.ensure_topics(kafka_bootstrap, partitions=3, topics=(topic,))
    _, manifest, table = make_batch(20_000, seed=23, files=1)
    publisher = ks.TransactionPublisher(kafka_bootstrap, KEY, "k1", topic)
    assert publisher.publish_table(table, manifest["batch_id"]) == 20_000
    assert "hmac" not in repr(publisher).lower() or KEY.decode() not in repr(publisher)
    result = kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": KEY}, keep_records=True)
    assert result.accepted == 20_000 and result.rejected == 0
    assert sorted(result.transaction_ids) == sorted(table.column("transaction_id").to_pylist())
    first = next(
        r for r in result.records if r["transaction_id"] == table.column("transaction_id")[0].as_py()
    )
    assert Transaction.model_validate(first) == table_to_models(table.slice(0, 1))[0]
    # a wrong key (rotation without the old key) rejects everything as unknown or tampered
    wrong = kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": b"other"})
    assert wrong.accepted == 0 and wrong.rejected_tampered == 20_000
    capped = kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": KEY}, max_messages=100)
    assert capped.accepted == 100
    with pytest.raises(ValueError, match="do not all belong"):
        publisher.publish_table(table.slice(0, 5), "another-batch")


def test_tampered_unsigned_and_unknown_key_are_rejected(kafka_bootstrap: str, make_batch) -> None:
    topic = _topic()
    ks.ensure_topics(kafka_bootstrap, partitions=1, topics=(topic,))
    _, manifest, table = make_batch(1_000, seed=24, files=1)
    batch_id = manifest["batch_id"]
    ks.TransactionPublisher(kafka_bootstrap, KEY, "k1", topic).publish_table(table.slice(0, 10), batch_id)
    value = ks.json_values(table.slice(10, 1))[0].as_py().encode()
    account = table.column("account_id")[10].as_py().encode()
    good_sig = sign(value, KEY, "k1").encode()
    head = [("batch_id", batch_id.encode()), ("schema_version", b"1")]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    tampered = value.replace(b'"amount":"', b'"amount":"9')
    producer.produce(topic, tampered, account, headers=[*head, ("signature", good_sig), ("key_id", b"k1")])
    producer.produce(topic, value, account, headers=head)  # unsigned
    producer.produce(topic, value, account, headers=[*head, ("signature", good_sig), ("key_id", b"k9")])
    producer.produce(
        topic, value, b"A0000000000", headers=[*head, ("signature", good_sig), ("key_id", b"k1")]
    )
    producer.produce(
        topic,
        value,
        account,
        headers=[
            ("batch_id", b"forged"),
            ("schema_version", b"1"),
            ("signature", good_sig),
            ("key_id", b"k1"),
        ],
    )
    assert producer.flush(10) == 0
    result = kv.consume(kafka_bootstrap, topic, verify=True, hmac_keys={"k1": KEY})
    assert result.accepted == 10
    assert (result.rejected_tampered, result.rejected_unsigned, result.rejected_unknown_key) == (3, 1, 1)
    assert table.column("transaction_id")[10].as_py() not in result.transaction_ids
    unverified = kv.consume(kafka_bootstrap, topic, verify=False)
    assert unverified.accepted == 15 and not unverified.verified


def test_request_events_and_consume_command(kafka_bootstrap: str, capsys: pytest.CaptureFixture) -> None:
    ks.ensure_topics(kafka_bootstrap, partitions=1)
    ks.publish_request_event(kafka_bootstrap, {"batch_id": "b-req", "rows": 10, "seed": 1}, KEY, "k1")
    got = kv.consume(
        kafka_bootstrap, ks.REQUESTS_TOPIC, verify=True, hmac_keys={"k1": KEY}, keep_records=True
    )
    assert {"batch_id": "b-req", "rows": 10, "seed": 1} in got.records and got.rejected == 0
    topic = _topic()
    ks.ensure_topics(kafka_bootstrap, partitions=1, topics=(topic,))
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_hmac_key=KEY.decode(),
        kafka_hmac_key_id="k1",
        kafka_topic_events=topic,
    )
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    raw.produce(topic, b'{"transaction_id":"x"}')
    assert raw.flush(10) == 0
    assert kv.kafka_consume_command(verify=True, max_n=None, settings=settings) == 1
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["rejected_unsigned"] == 1 and summary["accepted"] == 0
    assert kv.kafka_consume_command(verify=True, max_n=None, settings=Settings()) == 2


def test_unreachable_broker_is_a_clear_kafka_error() -> None:
    from fraudgen.devservices import free_ports

    port = free_ports(1)[0]
    with pytest.raises(ks.KafkaSinkError, match=r"kafka sink: broker 127\.0\.0\.1:\d+ unreachable"):
        ks.ensure_topics(f"127.0.0.1:{port}", timeout_s=2)
