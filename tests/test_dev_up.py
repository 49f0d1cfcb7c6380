"""`fraudgen dev up` as a user runs it: real servers start, the printed exports work with the other commands,
and Ctrl-C (or SIGTERM) stops exactly what it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_dev_up_prints_working_exports_and_stops_cleanly(stop: signal.Signals) -> None:
    cli = [sys.executable, "-m", "fraudgen.cli"]
    proc = subprocess.Popen([*cli, "dev", "up", "--services", "postgres,kafka"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while "FRAUDGEN_KAFKA_HMAC_KEY_ID" not in exports or "FRAUDGEN_POSTGRES_DSN" not in exports:
            assert time.monotonic() < deadline and proc.poll() is None, "dev up did not come up"
            line = proc.stdout.readline()
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                exports[key] = value
        env = {**os.environ, **exports}
        migrate = subprocess.run(
            [*cli, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stderr
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dev-up-{os.getpid()}-{stop.name}")
        generate = [
            *cli,
            "generate",
            "--rows",
            "3000",
            "--seed",
            "2",
            "--out",
            out,
            "--sink",
            "postgres,kafka",
        ]
        flow = subprocess.run(generate, env=env, capture_output=True, text=True, timeout=300)
        assert flow.returncode == 0, flow.stderr[-3000:]
        consume = subprocess.run([*cli, "kafka", "consume", "--verify", "--max", "5"], env=env,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert consume.returncode == 0, consume.stderr[-2000:]
        assert len(consume.stdout.splitlines()) == 5
        ports = [int(exports["FRAUDGEN_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])]
        ports.append(int(exports["FRAUDGEN_POSTGRES_DSN"].rsplit(":", 1)[1].split("/")[0]))
        assert all(_port_open(p) for p in ports)
    except BaseException:
        proc.send_signal(signal.SIGINT)  # a failed check must not leave the servers running
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "dev services stopped" in err
    assert not any(_port_open(p) for p in ports)
    shutil.rmtree(out, ignore_errors=True)
