"""Scripts on a cluster whose nodes' script caches differ: a node that lost its scripts (a new
node, a failover, SCRIPT FLUSH on that node only) still runs them, called directly or queued in
a pipeline that also reaches the other nodes."""

from __future__ import annotations

import uuid

import redis

from sinks.hotset import Lua, keys, script
from tests.support.stack import Stack


def tenant_on(client: redis.RedisCluster, port: int) -> str:
    """A tenant id whose slot is served by the node on `port`."""
    while True:
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        if client.get_node_from_key(keys.recent(tenant)).port == port:
            return tenant


async def test_a_script_runs_after_one_node_lost_it(stack: Stack) -> None:
    sync = stack.redis_client()
    assert isinstance(sync, redis.RedisCluster)
    tenants = {node.port: tenant_on(sync, node.port) for node in stack.redis_nodes}
    client = stack.async_redis()
    try:
        ids = script(client, Lua.CONTEXT_PAGES)

        def page(tenant: str, start: int) -> dict[str, object]:
            return {
                "keys": [keys.standing_generation(tenant), keys.recent(tenant)],
                "args": [keys.memory(tenant, ""), "", 0, start, 1],
            }

        for tenant in tenants.values():
            await client.zadd(keys.recent(tenant), {"a": 1, "b": 2})
            assert await ids(**page(tenant, 0)) == ["0", [[2, ["b"], [None]]]]  # loaded everywhere
        for port, tenant in tenants.items():
            with redis.Redis(port=port) as node:
                node.script_flush()
                assert node.script_exists(ids.sha) == [False]
            # Called directly: EVALSHA fails on that node, the script is loaded and run again.
            assert await ids(**page(tenant, 0)) == ["0", [[2, ["b"], [None]]]]
            with redis.Redis(port=port) as node:
                node.script_flush()
            # In a pipeline spanning every node: the pipeline loads it before it runs.
            pipe = client.pipeline(transaction=False)
            for t in tenants.values():
                await ids(**page(t, 1), client=pipe)
            assert await pipe.execute() == [["0", [[2, ["a"], [None]]]]] * len(tenants)
    finally:
        await client.aclose()
        sync.close()
