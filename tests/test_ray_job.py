"""`ray job submit -- fraudgen generate …` against an existing cluster (RAY_ADDRESS) works like the CLI.

Starts a separate single-node Ray head (loopback only, auth disabled, private temp dir) with the job server,
submits the real CLI as the entrypoint, and stops exactly the processes of that head's session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tempfile.mkdtemp(prefix="rjob-", dir="/tmp")
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": tmp,
    }
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(_free_port()),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", "1",
         "--include-dashboard", "true", "--ray-client-server-port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port()), "--temp-dir", tmp],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or head.poll() is not None:
                    pytest.fail("the Ray head for the job test did not start")
                time.sleep(1)
        yield address, env
    finally:
        # every process of the head's session (gcs, raylet, dashboard, workers) and nothing else
        mine = [p for p in psutil.process_iter(["pid"]) if _session(p) == head.pid]
        for proc in mine:
            proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(mine, timeout=10)
        for proc in alive:
            proc.kill()


def _session(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


def test_ray_job_submit_runs_the_cli_on_the_cluster(
    ray_head: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    address, env = ray_head
    out = tmp_path / "out"
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--",
         str(BIN / "fraudgen"), "generate", "--rows", "20000", "--seed", "3", "--batch-id", "job",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((out / "batch_id=job" / "manifest.json").read_text())
    assert manifest["rows"] == 20000
