"""Every test in this folder runs on a three-master Redis Cluster (tests/support/redis_cluster.py)
instead of one redis-server: the modules here re-use test functions of the suite, unchanged."""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_backend" in metafunc.fixturenames:
        metafunc.parametrize("redis_backend", ["cluster"], indirect=True, scope="session")
