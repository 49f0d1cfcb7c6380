"""Live streams for decision-engine load tests: transactions in timestamp order, paced in wall-clock time.

The stream is cut into *chunks*: chunk ``k`` covers the event-time window ``[start + k·W, start + (k+1)·W)``
and is one ordinary generation request over a fixed population, split into a fixed number of user-range
partitions (shards). Its rows are generated ahead of time (in-process, or by Ray actors partitioned by user
range), merged in time order and handed to a pacing loop through a bounded queue — memory stays bounded
when the sink is slower than the generator, because the generator then simply waits.

Pacing: ``rate`` mode sends ``rate`` rows per wall second whatever their timestamps; ``event-time`` mode
sends each row when ``(timestamp - start) / speedup`` wall seconds have passed, so diurnal peaks and fraud
bursts arrive as they would (the average wall rate is still ``rate``: chunk sizes follow the daily rhythm).
Determinism: chunk ``k`` depends only on (seed, stream id, k) — the same seed gives the same sequence
whatever the number of actors.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraudgen.request import DEFAULT_FRAUD_RATE, DEFAULT_SCENARIO_MIX, GenerationRequest
from fraudgen.simulate.manifest import ShardSpec, build_manifest
from fraudgen.world import HOURLY_WEIGHT

MAX_RATE = 2_000_000.0


class StreamConfig(BaseModel):
    """What a stream emits and how fast; the CLI flags and the WebSocket query use these names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=1_000.0, gt=0, le=MAX_RATE, description="average rows per wall second")
    speedup: float | None = Field(default=None, gt=0, le=1e7, description="event-time pacing when set")
    duration_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    rows: int | None = Field(default=None, ge=1, le=10**12)
    seed: int = Field(default=42, ge=0, lt=2**63)
    stream_id: str = Field(default="stream", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    fraud_rate: float = Field(default=DEFAULT_FRAUD_RATE, ge=0.0, le=1.0)
    scenario_mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SCENARIO_MIX))
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    users: int = Field(default=100_000, ge=100, le=50_000_000)
    partitions: int = Field(default=4, ge=1, le=256, description="user-range partitions of every chunk")
    chunk_rows: int = Field(default=50_000, ge=1_000, le=1_000_000, description="rows of an average chunk")

    @model_validator(mode="after")
    def _checks(self) -> StreamConfig:
        # validate the mix and window once, with the same messages as batch requests
        GenerationRequest(rows=1, scenario_mix=self.scenario_mix, fraud_rate=self.fraud_rate)
        return self

    @property
    def chunk_event_seconds(self) -> float:
        """Event-time width of a chunk: an average chunk holds ``chunk_rows`` rows."""
        if self.speedup is None:
            # an hour of event time per chunk: bursts and takeovers (minutes to hours) fit inside one chunk
            # instead of being squeezed against its edges; longer cases (identity theft) are compressed
            return 3600.0
        return max(1.0, self.chunk_rows * self.speedup / self.rate)

    def chunk_row_count(self, k: int) -> int:
        """Rows of chunk ``k``: constant in rate mode; following the daily rhythm in event-time mode."""
        if self.speedup is None:
            return self.chunk_rows
        begin = self.start + timedelta(seconds=k * self.chunk_event_seconds)
        weight = HOURLY_WEIGHT[begin.hour] / HOURLY_WEIGHT.mean()
        return max(self.partitions * 100, round(self.chunk_rows * weight))

    def chunk_request(self, k: int) -> GenerationRequest:
        width = self.chunk_event_seconds
        rows = self.chunk_row_count(k)
        return GenerationRequest(
            rows=rows,
            seed=self.seed,
            batch_id=self.stream_id,
            fraud_rate=self.fraud_rate,
            scenario_mix=self.scenario_mix,
            start=self.start + timedelta(seconds=k * width),
            end=self.start + timedelta(seconds=(k + 1) * width),
            users=self.users,
            # small chunks get fewer partitions so per-shard fraud quotas still fit whole cases
            shard_rows=max(100, math.ceil(rows / max(1, min(self.partitions, rows // 25_000)))),
        )


def chunk_specs(config: StreamConfig, k: int) -> tuple[GenerationRequest, list[ShardSpec]]:
    request = config.chunk_request(k)
    # each chunk's synthetic identities get their own user numbers (a chunk has < 2·chunk_rows rows)
    stride = 2 * config.chunk_rows
    specs = [
        spec.model_copy(update={"epoch": k, "identity_user_start": spec.identity_user_start + k * stride})
        for spec in build_manifest(request)
    ]
    return request, specs


def generate_partition(config: StreamConfig, k: int, partition: int) -> pa.Table:
    """One user-range partition of chunk ``k`` (what a fan-out actor computes)."""
    from fraudgen.simulate.engine import generate_shard

    request, specs = chunk_specs(config, k)
    return generate_shard(request, specs[partition]) if partition < len(specs) else _empty()


def merge_in_time_order(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables([t for t in tables if t.num_rows] or [_empty()])
    if table.num_rows == 0:
        return table
    ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
    return table.take(pa.array(np.argsort(ts, kind="stable")))


def _empty() -> pa.Table:
    from fraudgen.schema import empty_table

    return empty_table()


class ChunkSource(Protocol):
    def __call__(self, k: int) -> pa.Table: ...


def local_source(config: StreamConfig) -> ChunkSource:
    def chunk(k: int) -> pa.Table:
        _, specs = chunk_specs(config, k)
        return merge_in_time_order([generate_partition(config, k, p) for p in range(len(specs))])

    return chunk


def ray_source(config: StreamConfig, actors: int) -> ChunkSource:
    """Fan out each chunk's partitions over ``actors`` Ray actors and merge them in time order."""
    import ray

    from fraudgen.raylocal import init_ray

    init_ray()

    @ray.remote(num_cpus=1)
    class PartitionWorker:
        def __init__(self, config_json: str) -> None:
            self.config = StreamConfig.model_validate_json(config_json)

        def generate(self, k: int, partition: int) -> pa.Table:
            return generate_partition(self.config, k, partition)

    workers = [PartitionWorker.remote(config.model_dump_json()) for _ in range(max(1, actors))]  # type: ignore[attr-defined]

    def chunk(k: int) -> pa.Table:
        _, specs = chunk_specs(config, k)
        refs = [workers[p % len(workers)].generate.remote(k, p) for p in range(len(specs))]
        return merge_in_time_order(ray.get(refs))

    return chunk


class StreamSink(Protocol):
    def send(self, table: pa.Table) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    """JSON lines (the same JSON as the Kafka values) to a file descriptor, or to any ``write`` callable.

    On a descriptor every tick's lines go out with ``os.write`` until the last byte is written: a signal
    that interrupts a write blocked on a full pipe (a slow reader) can then never cut a line or strand it
    in a buffer, so a stream stopped by SIGTERM ends with exactly the events it counted.
    """

    def __init__(self, write: Callable[[str], Any] | None = None, fd: int | None = None) -> None:
        if (write is None) == (fd is None):
            raise ValueError("StdoutSink takes either write or fd")
        self._write = write
        self._fd = fd

    def send(self, table: pa.Table) -> None:
        from fraudgen.sinks.kafka import json_values

        if not table.num_rows:
            return
        text = "\n".join(json_values(table).to_pylist()) + "\n"
        if self._write is not None:
            self._write(text)
            return
        assert self._fd is not None
        view = memoryview(text.encode())
        while view:
            view = view[os.write(self._fd, view) :]

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class KafkaSink:
    """Signed events on ``synthetic_tx_events`` (same format as batch persistence), acks awaited at the end.

    A full producer queue blocks ``send``, which blocks the pacing loop: the stream lags instead of
    buffering without bound.
    """

    def __init__(self, settings: Any, stream_id: str) -> None:
        from fraudgen.sinks.kafka import TransactionPublisher, ensure_topics

        if not settings.kafka_bootstrap_servers or settings.kafka_hmac_key is None:
            raise ValueError("--sink kafka: set FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS and FRAUDGEN_KAFKA_HMAC_KEY")
        ensure_topics(
            settings.kafka_bootstrap_servers, settings.kafka_partitions, (settings.kafka_topic_events,)
        )
        self._batch_id = stream_id
        self._publisher = TransactionPublisher(
            settings.kafka_bootstrap_servers,
            settings.kafka_hmac_key.get_secret_value().encode(),
            settings.kafka_hmac_key_id,
            settings.kafka_topic_events,
            message_timeout_ms=settings.kafka_message_timeout_ms,
        )

    def send(self, table: pa.Table) -> None:
        self._publisher.produce_table(table, self._batch_id)

    def flush(self) -> None:
        self._publisher.flush_pending()

    def close(self) -> None:
        self._publisher.close()


@dataclass
class StreamStats:
    """Live figures of a running stream (read by the progress line, returned at the end)."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    fraud: int = 0
    lag_s: float = 0.0
    chunks: int = 0
    stopped_by: str = ""
    emitting_ended: float | None = None  # when the last event was handed to the sink (before its flush)
    flush_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The rate is judged over the emitting period only: the sink's final flush (Kafka's delivery of
        what is still queued) is reported apart, so a slow flush never reads as a pacing error."""
        ended = self.emitting_ended if self.emitting_ended is not None else time.monotonic()
        elapsed = max(ended - self.started, 1e-9)
        return {
            "sent": self.sent,
            "fraud": self.fraud,
            "fraud_share": self.fraud / self.sent if self.sent else 0.0,
            "seconds": round(elapsed, 3),
            "achieved_rate": self.sent / elapsed,
            "lag_s": round(self.lag_s, 3),
            "chunks": self.chunks,
            "stopped_by": self.stopped_by,
            "flush_s": round(self.flush_s, 3),
        }


class Stream:
    """A bounded or endless paced stream. ``run`` blocks; ``stop`` (thread-safe) ends it cleanly."""

    def __init__(self, config: StreamConfig, sink: StreamSink, source: ChunkSource | None = None) -> None:
        self.config = config
        self.sink = sink
        self.source = source or local_source(config)
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=2)
        self._rate = config.rate
        self._error: BaseException | None = None

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self.stats.stopped_by = reason
        self._stop.set()

    def set_rate(self, rate: float) -> None:
        """Change the target rate mid-stream (rate mode); takes effect at the next tick."""
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] (got {rate})")
        self._rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    def _produce(self) -> None:
        """Generator thread: chunks in order into the bounded queue (blocks when the sink is behind)."""
        k = 0
        try:
            while not self._stop.is_set():
                table = self.source(k)
                while not self._stop.is_set():
                    try:
                        self._queue.put(table, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                k += 1
        except BaseException as exc:  # surfaced by run() in the caller's thread
            self._error = exc
        finally:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)

    def chunks(self) -> Iterator[pa.Table]:
        producer = threading.Thread(target=self._produce, name="fraudgen-stream-gen", daemon=True)
        producer.start()
        while not self._stop.is_set():
            try:
                table = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if table is None:
                if self._error is not None:
                    raise RuntimeError(f"stream generator failed: {self._error}") from self._error
                return
            yield table

    def run(self, progress: Callable[[StreamStats], None] | None = None, tick_s: float = 0.01) -> StreamStats:
        """Emit until the row/duration bound, or ``stop``; flushes the sink before returning."""
        config = self.config
        limit_rows = config.rows
        deadline = self.stats.started + config.duration_s if config.duration_s else math.inf
        start_us = int(config.start.timestamp() * 1_000_000)
        sent_at_rate_change = 0
        rate_clock = self.stats.started
        current_rate = self._rate
        last_progress = 0.0
        try:
            for table in self.chunks():
                if self.stats.chunks == 0:  # the schedule starts when the first chunk is ready
                    self.stats.started = rate_clock = time.monotonic()
                    deadline = self.stats.started + config.duration_s if config.duration_s else math.inf
                self.stats.chunks += 1
                ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
                fraud = table.column("is_fraud").to_numpy(zero_copy_only=False)
                offset = 0
                while offset < table.num_rows and not self._stop.is_set():
                    now = time.monotonic()
                    if now >= deadline:
                        self.stop("duration")
                        break
                    if self._rate != current_rate:  # restart the schedule from here at the new rate
                        sent_at_rate_change, rate_clock, current_rate = self.stats.sent, now, self._rate
                    if config.speedup is None:
                        due_total = sent_at_rate_change + int((now - rate_clock) * current_rate)
                        due = due_total - self.stats.sent
                        self.stats.lag_s = max(0.0, due / current_rate - tick_s)
                    else:
                        horizon = start_us + int((now - self.stats.started) * config.speedup * 1_000_000)
                        due = int(np.searchsorted(ts, horizon, side="right")) - offset
                        if offset < ts.size:
                            behind = (horizon - ts[offset]) / 1_000_000 / config.speedup
                            self.stats.lag_s = max(0.0, behind - tick_s) if due > 0 else 0.0
                    if limit_rows is not None:
                        due = min(due, limit_rows - self.stats.sent)
                    due = min(due, table.num_rows - offset)
                    if due > 0:
                        self.sink.send(table.slice(offset, due))
                        self.stats.fraud += int(np.count_nonzero(fraud[offset : offset + due]))
                        self.stats.sent += due
                        offset += due
                    if limit_rows is not None and self.stats.sent >= limit_rows:
                        self.stop("rows")
                        break
                    if progress and now - last_progress >= 1.0:
                        progress(self.stats)
                        last_progress = now
                    if due <= 0:
                        time.sleep(tick_s)
                if self._stop.is_set():
                    break
        finally:
            self._stop.set()
            self.stats.emitting_ended = flush_started = time.monotonic()
            self.sink.flush()
            self.sink.close()
            self.stats.flush_s = time.monotonic() - flush_started
        return self.stats


def install_signal_handlers(stream: Stream) -> None:
    """SIGINT/SIGTERM end the stream cleanly (flush, final count) instead of killing it mid-batch."""

    def handler(signum: int, _frame: Any) -> None:
        stream.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
