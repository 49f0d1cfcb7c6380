"""A throwaway Postgres 15 cluster from the Debian server binaries (initdb on first start)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from fraudgen.devservices.process import ServiceError, free_ports, port_open, wait_until

log = structlog.get_logger(__name__)

PG_BIN = os.environ.get("FRAUDGEN_PG_BIN", "/usr/lib/postgresql/15/bin")


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
