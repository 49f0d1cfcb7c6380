"""Starting or joining Ray safely on these machines.

Ray 2.60 binds the machine's public interface and turns token auth on by default, and a bare
``ray.init()`` joins (or hangs on) whatever cluster is recorded in the shared /tmp/ray. The embedded
default therefore pins every listener to loopback, disables auth for the private local instance, keeps
its files in a private RAY_TMPDIR, and starts a fresh local instance — unless RAY_ADDRESS says to join
an existing cluster (``ray job submit``, KubeRay), which is then honoured as is.
"""

from __future__ import annotations

import logging
import os
import tempfile

_LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


def ensure_local_ray_env() -> None:
    """Set the loopback-only, no-auth, private-tmpdir environment (before Ray starts any process)."""
    for key, value in _LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    if "RAY_TMPDIR" not in os.environ:
        # short path: Ray's unix sockets must stay under 108 bytes
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rfg-", dir="/tmp")


def init_ray(num_cpus: int | None = None) -> None:
    """Join RAY_ADDRESS when set, otherwise start a private embedded instance on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, logging_level=logging.WARNING)
    else:
        ensure_local_ray_env()
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Our CLI draws its own progress bar: silence Ray Data's progress output and start-up banners."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
