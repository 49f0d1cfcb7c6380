"""Sink throughput on this machine: Kafka publish and Postgres load, one JSON line per benchmark.

Starts its own Postgres 15 and tansu broker (fraudgen.devservices), writes one batch of ``--rows`` rows
(rule engine, ``--files`` Parquet parts in the pipeline's layout), then measures:

* ``kafka_publish``   one in-process TransactionPublisher: JSON + HMAC + idempotent lz4 produce + acks
* ``kafka_persist``   persist_batch(sinks={"kafka"}) with the Ray actor pool (includes actor start-up)
* ``postgres_load``   one connection, load_parquet_file per part (binary COPY straight into the table)
* ``postgres_load_parallel`` ``--pool`` connections (threads), the parts split between them
* ``postgres_persist`` persist_batch(sinks={"postgres"}) with the Ray actor pool, into an empty table
* ``s3_write``        the batch's Parquet parts written through the pipeline's S3 store (SSE AES256) into a
                      local SeaweedFS, MB/s of Parquet bytes (target >= 100 MB/s; seed: 50 MB/s); three
                      rounds, the median reported with every round beside it

* ``pipeline``        the whole ``fraudgen generate --rows N --out s3://… --sink s3,postgres,kafka`` command
                      (a fresh process: Ray start, generation, validation, SSE upload to SeaweedFS, then
                      Postgres and Kafka persisted by actors at once), ``--pipeline-rows`` (default 10M);
                      run it alone, it starts its own servers: ``--only pipeline``

The ``*_persist`` benches start Ray first (``ray_init_s``, not timed): they time what ``fraudgen persist``
does with Ray up (actor start-up, per-file reads of the Parquet parts, the final checks).

Every line also carries ``server_cpu_s`` (the broker's or the database's CPU during the measurement, via
psutil over its process tree) and, where the client runs in this process, ``cpu_us_per_row_total``: what
one row costs this machine in client plus server CPU, whatever else shares the cores. With the servers on
the same two cores as the client, ``rows_per_s`` can never exceed ``2 / cpu_us_per_row_total`` rows per µs.
``calibration`` (bench/machine.py) says how fast the VM was at the time.

Targets (issue 5): Kafka ≥ 200,000 tx/s (seed: 5,000), Postgres ≥ 200,000 rows/s.
Usage: python bench/sinks.py [--rows 1000000] [--files 4] [--pool 2] [--only kafka_publish,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fraudgen.config import Settings
from fraudgen.devservices import KafkaBroker, PostgresServer, S3Server
from fraudgen.pipeline import generate_batch_inprocess
from fraudgen.request import GenerationRequest
from fraudgen.sinks import kafka as ks
from fraudgen.sinks import postgres as pgs
from fraudgen.sinks.persist import persist_batch
from fraudgen.sinks.store import read_batch

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line

KEY = os.urandom(32).hex()


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants, including reaped ones (a server's
    exited backends); 0 when there is no such process."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = child.cpu_times()
                total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


class ServerCpu:
    """CPU that a server (broker, database) spent during a ``with`` block: ``seconds`` after exit."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.seconds = pid, 0.0

    def __enter__(self) -> ServerCpu:
        self._start = tree_cpu_s(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = tree_cpu_s(self.pid) - self._start


def emit(
    name: str,
    rows: int,
    seconds: float,
    target: int | None,
    cpu_s: float | None = None,
    server_cpu_s: float | None = None,
    **extra: object,
) -> None:
    """One JSON line. ``client_cpu_s`` is the CPU of this process only (in-process benches), and
    ``server_cpu_s`` that of the broker or database; their sum per row is what a sink costs this machine
    whatever else runs on it, so ``rows_per_total_cpu_s`` is the rate one free core would give (the
    servers share these two cores with the client here)."""
    rate = rows / seconds
    line: dict[str, object] = {
        "bench": name,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rate),
        "target_rows_per_s": target,
        "meets_target": None if target is None else rate >= target,
        "machine": platform.node(),  # stamp() adds the date, cores, load average and calibration
        **extra,
    }
    if "target_mb_per_s" in extra:  # a bandwidth benchmark: judged in MB/s, not rows/s
        line.pop("target_rows_per_s")
        line["meets_target"] = float(extra["mb_per_s"]) >= float(extra["target_mb_per_s"])  # type: ignore[arg-type]
    if cpu_s:
        line["client_cpu_s"] = round(cpu_s, 3)
        line["rows_per_client_cpu_s"] = round(rows / cpu_s)
    if server_cpu_s:
        line["server_cpu_s"] = round(server_cpu_s, 3)
    if cpu_s and server_cpu_s:
        line["cpu_us_per_row_total"] = round((cpu_s + server_cpu_s) / rows * 1e6, 2)
        line["rows_per_total_cpu_s"] = round(rows / (cpu_s + server_cpu_s))
    print(json.dumps(stamp(line)), flush=True)


def bench_s3_write(directory: Path, manifest: dict, rows: int) -> None:
    from fraudgen.sinks.store import open_store

    server = S3Server()
    info = server.start()
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=info["endpoint_url"],
            AWS_ACCESS_KEY_ID=info["access_key"],
            AWS_SECRET_ACCESS_KEY=info["secret_key"],
            AWS_REGION=info["region"],
        )
        store = open_store(f"s3://{info['bucket']}/bench")
        parts = [(f["path"], (directory / f["path"]).read_bytes()) for f in manifest["files"]]
        total = sum(len(data) for _, data in parts)
        from concurrent.futures import ThreadPoolExecutor

        # the pipeline writes one part per Ray task, several at once: upload the parts concurrently too
        rounds: list[tuple[float, float, float]] = []  # (seconds, client CPU, server CPU)
        for attempt in range(3):
            keyed = [(f"r{attempt}/{name}", data) for name, data in parts]
            with ServerCpu(server.pid) as server_cpu:
                started, cpu = time.perf_counter(), time.process_time()
                with ThreadPoolExecutor(max_workers=len(parts)) as pool:
                    list(pool.map(lambda part: store.write_bytes(*part), keyed))
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            rounds.append((seconds, cpu, server_cpu.seconds))
        seconds, cpu, server_s = sorted(rounds)[len(rounds) // 2]  # the median round
        each = [round(total / r[0] / 1e6, 1) for r in rounds]
        emit("s3_write", rows, seconds, 0, cpu, server_s, mb_per_s=round(total / seconds / 1e6, 1),
             target_mb_per_s=100, seed_target_mb_per_s=50, megabytes=round(total / 1e6, 1), sse="AES256",
             concurrent_uploads=len(parts), rounds_mb_per_s=each,
             mb_per_total_cpu_s=round(total / (cpu + server_s) / 1e6, 1))  # fmt: skip
    finally:
        server.destroy()


def _parallel_load(dsn: str, tables: list[pa.Table], batch_id: str, connections: int) -> float:
    """Seconds to load ``tables`` over ``connections`` connections at once (then empties the table)."""
    loaded: list[int] = []

    def worker(mine: list[pa.Table]) -> None:
        with pgs.connect(dsn) as conn:
            loaded.append(sum(pgs.load_parquet_file(conn, t, batch_id) for t in mine))

    threads = [threading.Thread(target=worker, args=(tables[i::connections],)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    assert sum(loaded) == sum(t.num_rows for t in tables), loaded
    with pgs.connect(dsn) as conn:
        conn.execute("TRUNCATE synthetic_transactions")
        conn.commit()
    return seconds


def bench_pipeline(rows: int) -> None:
    """The user's command end to end, timed from outside (process start to exit), then checked."""
    import subprocess

    pg, broker, s3 = PostgresServer(), KafkaBroker(), S3Server()
    try:
        pg.start()
        broker.start()
        info = s3.start()
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": info["endpoint_url"],
            "AWS_ACCESS_KEY_ID": info["access_key"],
            "AWS_SECRET_ACCESS_KEY": info["secret_key"],
            "AWS_REGION": info["region"],
            "FRAUDGEN_POSTGRES_DSN": pg.dsn,
            "FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "FRAUDGEN_KAFKA_HMAC_KEY": KEY,
        }
        command = [sys.executable, "-m", "fraudgen", "generate", "--rows", str(rows), "--seed", "7"]
        command += ["--out", f"s3://{info['bucket']}/pipeline", "--sink", "s3,postgres,kafka", "--json"]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"pipeline failed ({done.returncode}): {done.stderr[-2000:]}")
        summary = json.loads(done.stdout[done.stdout.index("{") :])
        sinks = {name: sink["state"] for name, sink in summary["sinks"].items()}
        assert set(sinks.values()) == {"done"}, sinks
        with pgs.connect(pg.dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM synthetic_transactions").fetchone()
        assert stored is not None and stored[0] == rows, stored
        emit("pipeline", rows, seconds, None, sinks="s3,postgres,kafka", postgres_rows=stored[0])
    finally:
        for server in (s3, broker, pg):
            server.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--pipeline-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--only",
        default="kafka_publish,kafka_persist,postgres_load,postgres_load_parallel,postgres_persist,s3_write",
    )
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    if "pipeline" in wanted:
        bench_pipeline(args.pipeline_rows)
        wanted.discard("pipeline")
        if not wanted:
            return 0
    request = GenerationRequest(rows=args.rows, seed=7, shard_rows=max(100, -(-args.rows // args.files)))
    pg, broker = PostgresServer(), KafkaBroker()
    with tempfile.TemporaryDirectory(prefix="fg-bench-") as tmp:
        root = Path(tmp)
        # the batch is written by the pipeline itself, exactly as users' batches are (not timed)
        batch_id = generate_batch_inprocess(request, Settings(), out_uri=tmp, allow_failed=True).batch_id
        manifest = json.loads((root / f"batch_id={batch_id}" / "manifest.json").read_text())
        table = read_batch(str(root / f"batch_id={batch_id}"))
        try:
            if wanted & {"kafka_persist", "postgres_persist"}:
                from fraudgen.raylocal import init_ray

                started = time.perf_counter()
                init_ray()
                print(json.dumps({"ray_init_s": round(time.perf_counter() - started, 2)}), flush=True)
            if wanted & {"kafka_publish", "kafka_persist"}:
                broker.start()
                ks.ensure_topics(broker.bootstrap, partitions=6, topics=("bench_publish", "bench_persist"))
            if "kafka_publish" in wanted:
                publisher = ks.TransactionPublisher(broker.bootstrap, KEY.encode(), "k1", "bench_publish")
                with ServerCpu(broker.pid) as server:
                    started, cpu = time.perf_counter(), time.process_time()
                    publisher.publish_table(table, batch_id)
                    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                emit("kafka_publish", args.rows, seconds, 200_000, cpu, server.seconds, processes=1)
            if "kafka_persist" in wanted:
                settings = Settings(
                    kafka_bootstrap_servers=broker.bootstrap,
                    kafka_hmac_key=KEY,
                    kafka_topic_events="bench_persist",
                    persist_pool_size=args.pool,
                )
                with ServerCpu(broker.pid) as server:
                    started = time.perf_counter()
                    result = persist_batch(str(root), batch_id, settings, {"kafka"})["kafka"]
                    seconds = time.perf_counter() - started
                assert result.state == "done", result.error
                emit("kafka_persist", args.rows, seconds, 200_000, None, server.seconds, actors=args.pool)
            if wanted & {"postgres_load", "postgres_load_parallel", "postgres_persist"}:
                pg.start()
                pgs.migrate(pg.dsn)
            if wanted & {"postgres_load", "postgres_load_parallel"}:
                paths = [root / f"batch_id={batch_id}" / f["path"] for f in manifest["files"]]
                tables = [pq.read_table(p) for p in paths]
            if "postgres_load" in wanted:
                with pgs.connect(pg.dsn) as conn:
                    with ServerCpu(pg.pid) as server:
                        started, cpu = time.perf_counter(), time.process_time()
                        loaded = sum(pgs.load_parquet_file(conn, t, batch_id) for t in tables)
                        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                    conn.execute("TRUNCATE synthetic_transactions")
                    conn.commit()
                assert loaded == args.rows
                emit("postgres_load", args.rows, seconds, 200_000, cpu, server.seconds, connections=1)
            if "postgres_load_parallel" in wanted:
                with ServerCpu(pg.pid) as server:
                    cpu = time.process_time()
                    seconds = _parallel_load(pg.dsn, tables, batch_id, args.pool)
                    cpu = time.process_time() - cpu
                emit("postgres_load_parallel", args.rows, seconds, 200_000, cpu, server.seconds,
                     connections=args.pool)  # fmt: skip
            if "postgres_persist" in wanted:
                settings = Settings(postgres_dsn=pg.dsn, persist_pool_size=args.pool)
                with ServerCpu(pg.pid) as server:
                    started = time.perf_counter()
                    result = persist_batch(str(root), batch_id, settings, {"postgres"})["postgres"]
                    seconds = time.perf_counter() - started
                assert result.state == "done", result.error
                emit("postgres_persist", args.rows, seconds, 200_000, None, server.seconds, actors=args.pool)
            if "s3_write" in wanted:
                bench_s3_write(root / f"batch_id={batch_id}", manifest, args.rows)
        finally:
            broker.destroy()
            pg.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
