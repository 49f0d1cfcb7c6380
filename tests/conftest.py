"""Shared fixtures. Ray starts once per session (never `ray stop`: it would kill every Ray on the box);
real services (Postgres, Kafka, S3) are started by the session fixtures in tests/services_fixtures.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from fraudgen.raylocal import ensure_local_ray_env

pytest_plugins = ["tests.services_fixtures"]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ensure_local_ray_env()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


@pytest.fixture()
def out_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fraudgen-test-") as d:
        yield os.path.join(d, "out")
