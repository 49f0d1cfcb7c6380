"""Paced live streams: order, determinism (also with Ray actors), rate, backpressure, clean shutdown, and the
real Kafka broker as a sink."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudgen.sinks.kafka_verify import consume
from fraudgen.stream import StdoutSink, Stream, StreamConfig, local_source, ray_source

HMAC_KEY = "stream-test-key-not-a-secret"


class Collect:
    """In-memory sink keeping the tables it was sent (optionally slow, to exercise backpressure)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.tables: list[pa.Table] = []
        self.delay_s = delay_s

    def send(self, table: pa.Table) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.tables.append(table)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables)


def _run(config: StreamConfig, source: Any = None) -> pa.Table:
    sink = Collect()
    Stream(config, sink, source).run(tick_s=0.005)
    return sink.table()


def test_events_come_in_time_order_and_the_same_seed_repeats_the_sequence() -> None:
    config = StreamConfig(rate=200_000, rows=45_000, chunk_rows=20_000, seed=7, fraud_rate=0.05)
    first, second = _run(config), _run(config)
    assert first.num_rows == 45_000
    assert first.column("transaction_id").equals(second.column("transaction_id"))
    assert first.column("signature").equals(second.column("signature"))
    ts = pc.cast(first.column("timestamp"), pa.int64()).to_numpy()
    assert (ts[1:] >= ts[:-1]).all()
    assert first.num_rows == len(set(first.column("transaction_id").to_pylist()))
    other = _run(config.model_copy(update={"seed": 8}))
    assert not other.column("signature").equals(first.column("signature"))
    # one world for the whole stream: a user seen in two chunks keeps their home country
    homes = []
    for k in (0, 5):
        chunk = local_source(config)(k).filter(pc.equal(pc.field("is_fraud"), False))
        pairs = chunk.group_by(["user_id", "country"]).aggregate([([], "count_all")]).to_pylist()
        best: dict[str, tuple[int, str]] = {}
        for row in pairs:
            best[row["user_id"]] = max(best.get(row["user_id"], (0, "")), (row["count_all"], row["country"]))
        homes.append({user: country for user, (_, country) in best.items()})
    shared = homes[0].keys() & homes[1].keys()
    assert len(shared) > 500
    assert sum(homes[0][u] == homes[1][u] for u in shared) > 0.9 * len(shared)


def test_ray_actor_fan_out_gives_the_same_sequence(ray_session: None) -> None:
    config = StreamConfig(rate=500_000, rows=120_000, chunk_rows=60_000, partitions=4, seed=3)
    local = _run(config)
    fanned = _run(config, ray_source(config, actors=2))
    assert fanned.column("transaction_id").equals(local.column("transaction_id"))


def test_rate_is_honoured_and_can_change_mid_stream() -> None:
    sink = Collect()
    stream = Stream(StreamConfig(rate=4_000, duration_s=6, chunk_rows=20_000), sink)
    changed_at: list[float] = []

    def double_the_rate_three_seconds_in() -> None:
        # the schedule starts when the first chunk is ready, not when run() is called: on a slow machine
        # generating that chunk takes a noticeable part of a second, so time the change from the schedule
        while stream.stats.chunks == 0:
            time.sleep(0.005)
        time.sleep(max(0.0, stream.stats.started + 3.0 - time.monotonic()))
        changed_at.append(time.monotonic())
        stream.set_rate(8_000)

    changer = threading.Thread(target=double_the_rate_three_seconds_in, daemon=True)
    changer.start()
    stats = stream.run()
    changer.join(timeout=5)
    # what a perfect pacer would have sent, given when the change really happened (a loaded machine may
    # oversleep the 3 s): 4k/s before it, 8k/s after it, until the 6 s duration
    before = changed_at[0] - stats.started
    expected = before * 4_000 + (6 - before) * 8_000
    assert 2.5 < before < 4.0
    assert abs(stats.sent - expected) <= 0.05 * expected, stats.summary()
    with pytest.raises(ValueError, match="rate"):
        stream.set_rate(0)


class SlowFlush(Collect):
    def flush(self) -> None:
        time.sleep(1.0)


def test_a_slow_final_flush_is_reported_apart_from_the_rate() -> None:
    stats = Stream(StreamConfig(rate=4_000, duration_s=2, chunk_rows=20_000), SlowFlush()).run()
    summary = stats.summary()
    assert summary["flush_s"] >= 1.0
    assert abs(summary["seconds"] - 2) < 0.2, summary
    assert abs(summary["achieved_rate"] - 4_000) <= 200, summary


def test_a_slow_sink_bounds_memory_instead_of_buffering() -> None:
    calls: list[int] = []
    config = StreamConfig(rate=1_000_000, duration_s=3, chunk_rows=5_000)
    base = local_source(config)

    def counting(k: int) -> pa.Table:
        calls.append(k)
        return base(k)

    sink = Collect(delay_s=0.05)
    stats = Stream(config, sink, counting).run()
    # the generator may run at most the bounded queue (2) plus the chunk in hand ahead of the sink
    assert len(calls) <= stats.chunks + 3
    assert stats.lag_s > 0.5  # the sink could not keep up: the stream lags rather than queueing


def test_event_time_pacing_follows_timestamps() -> None:
    config = StreamConfig(
        rate=5_000, duration_s=3, speedup=600.0, chunk_rows=5_000, start="2026-01-05T12:00:00Z"
    )
    table = _run(config)
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    start_us = int(config.start.timestamp() * 1e6)
    # three wall seconds at 600× cover at most 30 event minutes (plus one tick)
    assert ts.max() - start_us <= (3.2 * 600) * 1e6
    assert table.num_rows > 1_000


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fraudgen.cli", "stream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _summary(stderr: str) -> dict[str, Any]:
    return json.loads(stderr[stderr.index("{") :])


def test_cli_rejects_bad_parameters() -> None:
    proc = _cli("--rate", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--rate" in err
    proc = _cli("--rate", "10", "--sink", "carrier-pigeon")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--sink" in err


def test_sigterm_stops_stdout_stream_cleanly() -> None:
    proc = _cli("--rate", "3000", "--seed", "5")
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = _summary(err)
    lines = out.splitlines()
    assert summary["stopped_by"] == "SIGTERM" and summary["sent"] == len(lines) > 0
    json.loads(lines[-1])  # the last event is complete


def _kafka_env(bootstrap: str, topic: str) -> dict[str, str]:
    return {
        "FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FRAUDGEN_KAFKA_HMAC_KEY": HMAC_KEY,
        "FRAUDGEN_KAFKA_HMAC_KEY_ID": "stream",
        "FRAUDGEN_KAFKA_TOPIC_EVENTS": topic,
    }


def test_twenty_seconds_at_5000_per_second_to_kafka(kafka_bootstrap: str) -> None:
    proc = _cli("--rate", "5000", "--duration", "20", "--sink", "kafka", "--seed", "11",
                env=_kafka_env(kafka_bootstrap, "stream_rate"))  # fmt: skip
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    summary = _summary(err)
    assert abs(summary["achieved_rate"] - 5000) <= 250, summary
    assert abs(summary["seconds"] - 20) < 0.5 and summary["flush_s"] >= 0, summary
    events = consume(kafka_bootstrap, "stream_rate", verify=True, hmac_keys={"stream": HMAC_KEY.encode()},
                     keep_records=True)  # fmt: skip
    assert events.rejected == 0
    assert events.accepted == summary["sent"] == len(set(events.transaction_ids))
    by_key: dict[str, list[str]] = defaultdict(list)
    for record in events.records:
        by_key[record["account_id"]].append(record["timestamp"])
    assert all(times == sorted(times) for times in by_key.values())


def test_sigterm_leaves_no_unflushed_kafka_message(kafka_bootstrap: str) -> None:
    proc = _cli(
        "--rate", "20000", "--sink", "kafka", "--seed", "12", env=_kafka_env(kafka_bootstrap, "stream_term")
    )
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    summary = _summary(err)
    events = consume(kafka_bootstrap, "stream_term", verify=True, hmac_keys={"stream": HMAC_KEY.encode()})
    assert summary["sent"] > 0 and events.accepted == summary["sent"] and events.rejected == 0


def test_stdout_sink_writes_json_lines() -> None:
    buffer = io.StringIO()
    Stream(StreamConfig(rate=100_000, rows=2_500, chunk_rows=2_000), StdoutSink(buffer.write)).run()
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert len(rows) == 2_500 and {"transaction_id", "signature", "is_fraud"} <= rows[0].keys()
