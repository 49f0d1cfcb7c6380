"""``fraudgen serve``: start (or join) Ray, run the Serve application on host:port, block until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request

from deployments.auth import AuthConfigError, Authenticator, ensure_bind_allowed
from fraudgen.config import Settings

APP_NAME = "fraudgen"


def serve_command(host: str, port: int, settings: Settings) -> int:
    """Exit codes: 0 after Ctrl-C, 2 for a refused configuration (e.g. no auth off loopback), 1 otherwise."""
    settings = settings.model_copy(update={"api_host": host})
    try:
        ensure_bind_allowed(host, settings)
        Authenticator(settings)  # fail fast on an unusable keys file / JWKS configuration
    except AuthConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 1 <= port <= 65535:
        print(f"error: --port must be between 1 and 65535 (got {port})", file=sys.stderr)
        return 2

    from ray import serve

    from deployments.serve_app import build_application
    from fraudgen.raylocal import init_ray

    init_ray()
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as exc:
        print(f"error: the application failed to start: {exc}", file=sys.stderr)
        return 1
    url = f"http://{host}:{port}"
    if not _wait_ready(f"{url}/health", timeout_s=60):
        print(f"error: {url}/health did not answer within 60 s", file=sys.stderr)
        return 1
    print(f"fraudgen API listening on {url} (docs: {url}/docs, metrics: {url}/metrics)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("shutting down", file=sys.stderr)
    serve.delete(APP_NAME)
    return 0


def _wait_ready(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False
