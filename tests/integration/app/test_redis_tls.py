"""Redis over TLS end to end: a generated CA, redis-server on its TLS port only, and a memstream
write -> worker -> read path over `rediss://` with MEMSTREAM_REDIS_TLS_CA_FILE."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app import devstack
from app.redis_client import create_redis, create_sync_redis
from app.settings import DEFAULT_TTLS
from sinks.hotset import Hotset, keys
from tests.integration.pipeline import test_hotset_format as hotset_tests  # a module: not collected here
from tests.support import redis_cluster
from tests.support.gateway import running, worker_ready
from tests.support.redis_tls import Pki, make_pki, tls_redis_service
from tests.support.stack import Proc, Stack, isolated_topics


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, stack: Stack) -> Iterator[int]:
    svc = tls_redis_service(devstack.free_port(), pki, stack.tmp).start()
    yield svc.port
    svc.stop()


async def test_write_worker_read_over_tls(
    stack: Stack, warehouse_table: object, tls_redis: int, pki: Pki, tenant: str
) -> None:
    del warehouse_table
    tls_env = {
        "MEMSTREAM_REDIS_URL": f"rediss://127.0.0.1:{tls_redis}/0",
        "MEMSTREAM_REDIS_TLS_CA_FILE": str(pki.ca),
    }
    env, settings = isolated_topics(stack, "tls", **tls_env)
    with create_sync_redis(settings) as client:
        client.set(keys.WARM_MARKER, "fresh")
    worker = Proc(["worker"], env, stack.tmp / "worker-tls.log").start()
    try:
        async with running(settings) as gw:
            await worker_ready(gw)  # the worker reads and writes the hotset over TLS too
            out = await gw.store(tenant, {"type": "decision", "key": "db", "content": {"text": "use TLS to Redis"}})
            r = await gw.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": out["memory_id"]})
            assert r.status_code == 200, r.text
            assert r.json()["record"]["content"]["text"] == "use TLS to Redis"
    finally:
        worker.stop()


async def test_tls_refuses_a_server_the_ca_does_not_vouch_for(
    stack: Stack, tls_redis: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_pki(tmp_path_factory.mktemp("other-pki"))
    settings = stack.settings(
        redis_url=f"rediss://127.0.0.1:{tls_redis}/0", redis_tls_ca_file=str(other.ca), redis_timeout_s=1
    )
    client = create_redis(settings)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(client.ping(), 10)
    finally:
        await client.aclose()
    # Plain text to the TLS port is not Redis either.
    with (
        pytest.raises(redis.RedisError),
        redis.Redis(port=tls_redis, socket_timeout=1) as plain,
    ):
        plain.ping()


@pytest.fixture(scope="module")
def tls_cluster(pki: Pki, stack: Stack) -> Iterator[int]:
    nodes = redis_cluster.start(stack.tmp / "tls-cluster", tls=pki)
    yield nodes[0].port
    redis_cluster.stop(nodes)


async def test_the_hotset_on_a_tls_cluster(stack: Stack, tls_cluster: int, pki: Pki, tenant: str) -> None:
    """`rediss+cluster://`: TLS to every node the client discovers, scripts and pipelines included."""
    settings = stack.settings(redis_url=f"rediss+cluster://127.0.0.1:{tls_cluster}", redis_tls_ca_file=str(pki.ca))
    client = create_redis(settings)
    try:
        with create_sync_redis(settings) as rds:
            assert len(rds.get_nodes()) == 3  # type: ignore[attr-defined]
            hotset = Hotset(client, dict(DEFAULT_TTLS), 3600)
            await hotset_tests.test_supersession_marks_the_older_and_survives_its_new_versions(hotset, rds, tenant)
    finally:
        await client.aclose()
