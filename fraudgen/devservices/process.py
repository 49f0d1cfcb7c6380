"""Process plumbing shared by the dev servers: free ports, readiness waits, stopping our own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


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


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
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
