"""Session-wide real services on free loopback ports: Tansu (Kafka), redis-server, fakesnow.

Tests isolate themselves by tenant id (see `tenant`), never by restarting services.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app import devstack, migrate
from app.kafka import ensure_topics
from app.redis_client import create_redis, create_sync_redis
from app.settings import Settings
from sinks.hotset import keys
from sinks.hotset import layout as hotset_format
from tests.support import redis_cluster

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    kafka: devstack.Service
    redis: devstack.Service  # the standalone server, or the cluster's seed node
    warehouse: devstack.Service
    tmp: Path
    redis_nodes: list[devstack.Service] = field(default_factory=list)  # every cluster node

    @property
    def cluster(self) -> bool:
        return bool(self.redis_nodes)

    @property
    def redis_url(self) -> str:
        scheme = "redis+cluster" if self.cluster else "redis"
        return f"{scheme}://127.0.0.1:{self.redis.port}" + ("" if self.cluster else "/0")

    @property
    def env(self) -> dict[str, str]:
        return {
            "MEMSTREAM_ENV": "development",
            "MEMSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka.port}",
            "MEMSTREAM_REDIS_URL": self.redis_url,
            "MEMSTREAM_SNOWFLAKE_HOST": "127.0.0.1",
            "MEMSTREAM_SNOWFLAKE_PORT": str(self.warehouse.port),
            "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
            # The shared emulator can stall for seconds on a loaded 2-core machine, and one timeout
            # opens the session gateway's warehouse circuit for every test after it (tests of a
            # dead warehouse set their own, shorter timeout).
            "MEMSTREAM_SNOWFLAKE_NETWORK_TIMEOUT_S": "6",
            "MEMSTREAM_DEV_TENANT_HEADER_ENABLED": "true",
        }

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {k.removeprefix("MEMSTREAM_").lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    def redis_client(self, decode: bool = True) -> redis.Redis:
        """A blocking client of this stack's Redis (standalone or cluster), as the app makes it."""
        return create_sync_redis(self.settings(), decode=decode)

    def async_redis(self, decode: bool = True) -> aioredis.Redis:
        """An asyncio client of this stack's Redis, kept out of the pool gauges."""
        return create_redis(self.settings(), decode=decode, gauged=False)


@dataclass
class Services:
    """The broker and the warehouse: shared by the standalone and the cluster-backed stacks."""

    kafka: devstack.Service
    warehouse: devstack.Service
    tmp: Path


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("stack")
    kafka = devstack.kafka_service(devstack.free_port(), tmp, cluster_id="memstream-test").start()
    wh = devstack.warehouse_service(devstack.free_port(), tmp / "warehouse", tmp).start(deadline_s=60)
    yield Services(kafka, wh, tmp)
    for svc in (wh, kafka):
        svc.stop()


@pytest.fixture(scope="session")
def redis_backend(request: pytest.FixtureRequest, services: Services) -> Iterator[list[devstack.Service]]:
    """One redis-server, or (param "cluster", set by tests/integration/cluster) a three-master
    Redis Cluster. Switching backends tears down `stack` and every fixture built on it."""
    if getattr(request, "param", "standalone") == "cluster":
        nodes = redis_cluster.start(services.tmp / f"cluster-{uuid.uuid4().hex[:6]}")
    else:
        nodes = [devstack.redis_service(devstack.free_port(), services.tmp).start()]
    yield nodes
    redis_cluster.stop(nodes)


@pytest.fixture(scope="session")
def stack(services: Services, redis_backend: list[devstack.Service]) -> Iterator[Stack]:
    cluster = redis_backend if len(redis_backend) > 1 else []
    s = Stack(services.kafka, redis_backend[0], services.warehouse, services.tmp, cluster)
    ensure_topics(s.settings())
    migrate.run(s.settings())  # the warehouse schema, as `memstream dev` does before the worker starts
    with s.redis_client() as client:
        client.set(keys.WARM_MARKER, "fresh")  # empty warehouse, empty hotset: warm, as /ready would mark it
    yield s


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def rds(stack: Stack) -> Iterator[redis.Redis]:
    client = stack.redis_client()
    yield client
    client.close()


def stored(rds: redis.Redis, tenant: str, memory_id: str) -> hotset_format.StoredMemory | None:
    """What the hotset holds for a memory (decode_responses clients only)."""
    return hotset_format.decode(rds.get(keys.memory(tenant, memory_id)))


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


class Proc:
    """A memstream subprocess (worker, gateway) with coverage and its own log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = {**os.environ, **self.env}
        out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *self.argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def isolated_topics(stack: Stack, prefix: str, **extra_env: str) -> tuple[dict[str, str], Settings]:
    """Fresh topics and consumer groups (created now), so a test can kill workers freely."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack.env,
        "MEMSTREAM_TOPIC_PREFIX": f"{prefix}{suffix}.",
        "MEMSTREAM_WORKER_GROUP": f"{prefix}g-{suffix}",
        "MEMSTREAM_WAREHOUSE_GROUP": f"{prefix}gw-{suffix}",
        "MEMSTREAM_EMBED_GROUP": f"{prefix}ge-{suffix}",
        **extra_env,
    }
    settings = stack.settings(**{k.removeprefix("MEMSTREAM_").lower(): v for k, v in env.items()})
    ensure_topics(settings)
    return env, settings


@pytest.fixture(scope="session")
def worker(stack: Stack) -> Iterator[Proc]:
    """The shared ingest worker for tests that only need the pipeline running."""
    proc = Proc(["worker"], stack.env, stack.tmp / "worker.log").start()
    yield proc
    proc.stop()
