"""Every Redis client memstream makes comes from here: standalone or Redis Cluster, plain or TLS.

The URL picks the mode: `redis://` / `rediss://` (TLS) for one server, `redis+cluster://` /
`rediss+cluster://` (or MEMSTREAM_REDIS_CLUSTER=true) for a cluster, whose other nodes are
discovered from the one named. A standalone pool of MEMSTREAM_REDIS_MAX_CONNECTIONS lets a request
wait up to MEMSTREAM_REDIS_POOL_TIMEOUT_S for a free connection instead of failing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.cluster
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from app import metrics
from app.settings import Settings

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def redis_target(url: str, cluster: bool) -> tuple[str, bool]:
    """The URL redis-py understands (without `+cluster`) and whether to use the cluster client."""
    parts = urlsplit(url)
    plain = _CLUSTER_SCHEMES.get(parts.scheme)
    if plain is None:
        return url, cluster
    return urlunsplit(parts._replace(scheme=plain)), True


def client_options(settings: Settings, url: str, *, decode: bool, socket_timeout: float | None) -> dict[str, Any]:
    """Connection options shared by the async and sync, standalone and cluster clients."""
    opts: dict[str, Any] = {
        "decode_responses": decode,
        "socket_timeout": socket_timeout or settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "health_check_interval": 15,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if settings.redis_password:
        opts["password"] = settings.redis_password.get_secret_value()
    if urlsplit(url).scheme == "rediss":  # TLS options exist only on TLS connections
        tls = {
            "ssl_ca_certs": settings.redis_tls_ca_file,
            "ssl_certfile": settings.redis_tls_cert_file,
            "ssl_keyfile": settings.redis_tls_key_file,
        }
        opts.update({k: v for k, v in tls.items() if v})
    return opts


class WaitingPool(aioredis.BlockingConnectionPool):
    """A blocking pool that counts the requests waiting for a connection (a gauge)."""

    waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self.waiting -= 1


class ClusterScript(AsyncScript):
    """EVALSHA with NOSCRIPT fallback on a cluster: called directly, redis-py's own fallback
    loads the script on every primary; queued in a pipeline, the pipeline loads it first."""

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if isinstance(client, ScriptingClusterPipeline):
            client.scripts.add(self)
            # redis-py blocks the evalsha method in cluster pipelines; the raw command routes by
            # its keys (all of one tenant's slot), which is what memstream guarantees.
            return client.execute_command("EVALSHA", self.sha, len(keys or []), *(keys or []), *(args or []))
        return await super().__call__(keys, args, client)


class ScriptingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that, like redis-py's standalone one, makes sure the scripts it holds
    are cached on every primary before it runs (a new node, a failover or SCRIPT FLUSH loses them)."""

    def __init__(self, client: RedisCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self.scripts: set[AsyncScript] = set()

    def mget(self, keys: Any, *args: Any) -> Any:
        """redis-py blocks MGET in cluster pipelines; memstream's MGETs read one tenant's slot."""
        names = [keys, *args] if isinstance(keys, (str, bytes)) else [*keys, *args]
        return self.execute_command("MGET", *names)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        scripts = list(self.scripts)
        self.scripts.clear()
        if scripts:
            exists = await self.cluster_client.script_exists(*(s.sha for s in scripts))
            for s, cached in zip(scripts, exists, strict=True):
                if not cached:  # on some primary: SCRIPT LOAD goes to all of them
                    s.sha = await self.cluster_client.script_load(s.script)
        client = cast(ScriptingCluster, self.cluster_client)
        # During a slot migration redis-py re-sends redirected commands one by one through the
        # client, which takes a second slot: with every slot held, that waits for the bound.
        async with client.connection_slot():
            return await super().execute(raise_on_error, allow_redirections)


class ScriptingCluster(RedisCluster):
    """RedisCluster whose scripts survive a script cache that differs between nodes, and whose
    callers wait (up to MEMSTREAM_REDIS_POOL_TIMEOUT_S) for a connection when max_connections
    are in use: redis-py's cluster nodes fail at once ("Too many connections") instead.
    One command or pipeline holds at most one connection per node, so bounding them to
    max_connections bounds every node's pool."""

    def __init__(self, *args: Any, pool_timeout_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_timeout_s = pool_timeout_s
        self._slots = asyncio.Semaphore(kwargs.get("max_connections") or 2**31)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def connection_slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            async with asyncio.timeout(self.pool_timeout_s):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.connection_slot():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if transaction or shard_hint:  # a transaction cannot span the cluster's slots
            raise ValueError("memstream does not run transactions on Redis Cluster")
        return ScriptingClusterPipeline(self, transaction)

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        return ClusterScript(self, script)  # type: ignore[arg-type]


# Every pool (standalone) and cluster client this process made and still holds: the gauges add
# them up at scrape time. A cluster client holds one pool per node.
_POOLS: weakref.WeakSet[WaitingPool] = weakref.WeakSet()
_CLUSTERS: weakref.WeakSet[ScriptingCluster] = weakref.WeakSet()


def pool_connections(state: str) -> int:
    """In-use, idle, max or waiting connections over the live request pools."""
    total = 0
    for pool in list(_POOLS):
        if state == "in_use":
            total += len(pool._in_use_connections)
        elif state == "idle":
            total += len(pool._available_connections)
        elif state == "waiting":
            total += pool.waiting
        else:
            total += pool.max_connections
    for cluster in list(_CLUSTERS):
        for node in cluster.get_nodes():
            if state == "in_use":
                total += len(node._connections) - len(node._free)
            elif state == "idle":
                total += len(node._free)
            elif state == "max":
                total += node.max_connections
        if state == "waiting":
            total += cluster.waiting
    return total


for _state in ("in_use", "idle", "max", "waiting"):
    metrics.REDIS_POOL_CONNECTIONS.labels(_state).set_function(partial(pool_connections, _state))


def create_redis(
    settings: Settings,
    *,
    decode: bool = True,
    max_connections: int | None = None,
    socket_timeout: float | None = None,
    gauged: bool = True,
) -> aioredis.Redis:
    """The async client. `decode=False`: values come back as bytes (the hotset's binary vectors).
    `gauged=False` keeps a side pool (the change feed's blocking reads) out of the pool gauges."""
    url, cluster = redis_target(settings.redis_url.get_secret_value(), settings.redis_cluster)
    opts = client_options(settings, url, decode=decode, socket_timeout=socket_timeout)
    opts["retry"] = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    size = max_connections or settings.redis_max_connections
    if cluster:
        client = cast(
            ScriptingCluster,
            ScriptingCluster.from_url(url, max_connections=size, pool_timeout_s=settings.redis_pool_timeout_s, **opts),
        )
        if gauged:
            _CLUSTERS.add(client)
        # Same command API (commands, pipeline, register_script); typed as Redis for the callers.
        return cast(aioredis.Redis, client)
    pool = WaitingPool.from_url(url, max_connections=size, timeout=settings.redis_pool_timeout_s, **opts)
    if gauged:
        _POOLS.add(pool)
    return aioredis.Redis.from_pool(pool)


def create_sync_redis(settings: Settings, *, decode: bool = True) -> redis.Redis:
    """The blocking client (CLI importer, demo): the same URL, cluster and TLS rules."""
    url, cluster = redis_target(settings.redis_url.get_secret_value(), settings.redis_cluster)
    opts = client_options(settings, url, decode=decode, socket_timeout=None)
    opts["retry"] = SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    if cluster:
        return cast(redis.Redis, redis.cluster.RedisCluster.from_url(url, **opts))  # type: ignore[no-untyped-call]
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_s, **opts
    )
    return redis.Redis.from_pool(pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, (RedisCluster, redis.cluster.RedisCluster))
