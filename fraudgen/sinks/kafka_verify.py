"""The verifying consumer of ``synthetic_tx_events``: reads the topic, checks every message's HMAC signature
and key id, and counts (never returns) unsigned, unknown-key and tampered messages.

``fraudgen kafka consume --verify`` is this module; the producer side is :mod:`fraudgen.sinks.kafka`.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fraudgen.sinks.kafka import EVENTS_TOPIC, KafkaSinkError
from fraudgen.sinks.signing import KEY_ID_HEADER, SIGNATURE_HEADER, verify


@dataclass
class ConsumeResult:
    """What a consume pass saw. Rejected messages are counted, never returned as accepted."""

    topic: str
    verified: bool
    accepted: int = 0
    rejected_unsigned: int = 0
    rejected_unknown_key: int = 0
    rejected_tampered: int = 0
    transaction_ids: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.rejected_unsigned + self.rejected_unknown_key + self.rejected_tampered

    def summary(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "verified": self.verified,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_unsigned": self.rejected_unsigned,
            "rejected_unknown_key": self.rejected_unknown_key,
            "rejected_tampered": self.rejected_tampered,
            "distinct_transaction_ids": len(set(self.transaction_ids)),
        }


def classify(
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    hmac_keys: dict[str, bytes],
) -> tuple[str, dict[str, Any] | None]:
    """'ok' | 'unsigned' | 'unknown_key' | 'tampered', with the parsed value when ok.

    Beyond the HMAC (which covers the value), the routing key and the batch_id header must agree with
    the signed value, so re-keyed or re-labelled messages are rejected too.
    """
    head = {k: v for k, v in (headers or [])}
    signature, key_id = head.get(SIGNATURE_HEADER), head.get(KEY_ID_HEADER)
    if value is None or not signature or not key_id:
        return "unsigned", None
    kid = key_id.decode("utf-8", "replace")
    if kid not in hmac_keys:
        return "unknown_key", None
    if not verify(value, signature, hmac_keys[kid], kid):
        return "tampered", None
    try:
        record = json.loads(value)
    except ValueError:
        return "tampered", None
    if not isinstance(record, dict):
        return "tampered", None
    if "account_id" in record and key is not None and key.decode("utf-8", "replace") != record["account_id"]:
        return "tampered", None
    if "batch_id" in head and "batch_id" in record and head["batch_id"].decode() != str(record["batch_id"]):
        return "tampered", None
    return "ok", record


def consume(
    bootstrap: str,
    topic: str = EVENTS_TOPIC,
    verify: bool = True,
    max_messages: int | None = None,
    hmac_keys: dict[str, bytes] | None = None,
    timeout_s: float = 60.0,
    keep_records: bool = False,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> ConsumeResult:
    """Read the topic from the beginning up to its current end (or ``max_messages``), verifying each message.

    Partitions are assigned directly (no consumer-group join, which costs ~3 s), and reading stops at the
    high watermarks taken at start, so the pass is finite and deterministic.
    """
    if verify and not hmac_keys:
        raise ValueError("kafka consume --verify needs at least one HMAC key")
    keys = hmac_keys or {}
    result = ConsumeResult(topic=topic, verified=verify)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fraudgen-verify-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "socket.connection.setup.timeout.ms": 3000,
        }
    )
    try:
        try:
            meta = consumer.list_topics(topic, timeout=min(timeout_s, 10))
        except KafkaException as exc:
            raise KafkaSinkError(f"broker {bootstrap} unreachable: {exc.args[0]}", transient=True) from exc
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            return result
        ends: dict[int, int] = {}
        assignment = []
        for p in tmeta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaSinkError(f"consume from {topic} failed: {error.str()}", transient=True)
                part, offset = msg.partition(), msg.offset()
                if part is not None and offset is not None and part in ends and offset >= ends[part] - 1:
                    del ends[part]
                _count(result, msg, verify, keys, keep_records, on_message)
                if max_messages is not None and result.accepted + result.rejected >= max_messages:
                    return result
    finally:
        consumer.close()
    if ends:
        raise KafkaSinkError(f"consume from {topic} did not reach the end within {timeout_s:.0f} s", True)
    return result


def _count(
    result: ConsumeResult,
    msg: Any,
    verify_: bool,
    keys: dict[str, bytes],
    keep: bool,
    on_message: Callable[[dict[str, Any]], None] | None,
) -> None:
    if verify_:
        verdict, record = classify(msg.value(), msg.key(), msg.headers(), keys)
    else:
        verdict, record = "ok", json.loads(msg.value() or b"null")
    if verdict != "ok" or record is None:
        name = "rejected_" + ("tampered" if verdict == "ok" else verdict)
        setattr(result, name, getattr(result, name) + 1)
        return
    result.accepted += 1
    if isinstance(record, dict) and "transaction_id" in record:
        result.transaction_ids.append(str(record["transaction_id"]))
    if keep:
        result.records.append(record)
    if on_message is not None:
        on_message(record)


def hmac_keys_from_settings(settings: Any) -> dict[str, bytes]:
    """``{key_id: key}`` from FRAUDGEN_KAFKA_HMAC_KEY(_ID); the key is used as its UTF-8 bytes."""
    if settings.kafka_hmac_key is None:
        return {}
    return {settings.kafka_hmac_key_id: settings.kafka_hmac_key.get_secret_value().encode()}


def kafka_consume_command(verify: bool, max_n: int | None, settings: Any) -> int:
    """``fraudgen kafka consume [--verify] [--max N]``: accepted events as JSON lines on stdout, a summary on
    stderr. Exit 0 all accepted, 1 some message rejected, 2 missing settings or broker unreachable."""

    if not settings.kafka_bootstrap_servers:
        print("error: FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    keys = hmac_keys_from_settings(settings)
    if verify and not keys:
        print("error: --verify needs FRAUDGEN_KAFKA_HMAC_KEY", file=sys.stderr)
        return 2
    write = sys.stdout.write

    def emit(record: dict[str, Any]) -> None:
        write(json.dumps(record, separators=(",", ":")) + "\n")

    try:
        result = consume(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_events,
            verify=verify,
            max_messages=max_n,
            hmac_keys=keys,
            on_message=emit,
        )
    except KafkaSinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    print(json.dumps(result.summary()), file=sys.stderr)
    return 1 if result.rejected else 0
