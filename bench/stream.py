"""Highest sustained stream rate to a real Kafka-protocol broker with lag under 1 s.

Starts a local tansu broker, then streams at a ladder of target rates for a short probe each; the highest
rate whose worst lag (after the first second) stayed under 1 s is then held for the full duration. Prints
ONE JSON line. Seed target for Kafka: 5,000 tx/s; our target: >= 100,000 tx/s.

    python bench/stream.py [--duration 60] [--probe 8] [--rates 20000,50000,...] [--actors 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

from fraudgen.config import Settings
from fraudgen.devservices import KafkaBroker
from fraudgen.stream import KafkaSink, Stream, StreamConfig, ray_source

from machine import stamp  # bench/machine.py: the machine's speed of the moment, on every line


def run_at(rate: float, seconds: float, settings: Settings, actors: int, topic: str) -> dict[str, Any]:
    config = StreamConfig(rate=rate, duration_s=seconds, chunk_rows=max(50_000, int(rate)), seed=1)
    worst = {"lag": 0.0}

    def watch(stats: Any) -> None:
        if time.monotonic() - stats.started > 1.0:
            worst["lag"] = max(worst["lag"], stats.lag_s)

    source = ray_source(config, actors) if actors else None
    local = settings.model_copy(update={"kafka_topic_events": topic})
    stats = Stream(config, KafkaSink(local, f"bench-{int(rate)}"), source).run(progress=watch)
    summary = stats.summary()
    # a bench counts what reached the broker: the final flush belongs to the sustained rate
    delivered = summary["sent"] / max(summary["seconds"] + summary["flush_s"], 1e-9)
    summary.update(
        target_rate=rate,
        worst_lag_s=round(max(worst["lag"], summary["lag_s"]), 3),
        delivered_rate=round(delivered, 1),
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--probe", type=float, default=8.0)
    parser.add_argument("--rates", default="10000,25000,50000,75000,100000,150000")
    parser.add_argument("--actors", type=int, default=0)
    args = parser.parse_args()
    broker = KafkaBroker()
    broker.start()
    try:
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_hmac_key="bench-key-not-a-secret",
            kafka_hmac_key_id="b",
        )
        probes = []
        best = 0.0
        for rate in (float(r) for r in args.rates.split(",")):
            probe = run_at(rate, args.probe, settings, args.actors, f"probe_{int(rate)}")
            keys = ("target_rate", "achieved_rate", "delivered_rate", "worst_lag_s")
            probes.append({k: probe[k] for k in keys})
            if probe["worst_lag_s"] >= 1.0 or probe["delivered_rate"] < 0.95 * rate:
                break
            best = rate
        held = run_at(best, args.duration, settings, args.actors, "held") if best else None
    finally:
        broker.destroy()
    print(
        json.dumps(
            stamp(
                {
                    "benchmark": "stream_kafka",
                    "machine": platform.node(),  # stamp() adds the date, cores, load average and calibration
                    "actors": args.actors,
                    "sustained_rate": held["delivered_rate"] if held else 0.0,
                    "sustained_paced_rate": held["achieved_rate"] if held else 0.0,
                    "sustained_worst_lag_s": held["worst_lag_s"] if held else None,
                    "sustained_seconds": held["seconds"] if held else 0.0,
                    "target": 100_000,
                    "seed_target": 5_000,
                    "probes": probes,
                }
            )
        )
    )


if __name__ == "__main__":
    main()
