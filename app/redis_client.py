"""Redis connection from settings (redis:// or rediss://), with retry on transient errors."""

from __future__ import annotations

import weakref
from functools import partial

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app import metrics
from app.settings import Settings

# Every pool this process created and still holds: the gauges add them up at scrape time.
_POOLS: weakref.WeakSet[aioredis.ConnectionPool] = weakref.WeakSet()


def pool_connections(state: str) -> int:
    """In-use, idle or max connections over the live pools (the pool fails fast with "Too many
    connections" when full, so in_use reaching max is the saturation signal)."""
    total = 0
    for pool in list(_POOLS):
        if state == "in_use":
            total += len(pool._in_use_connections)
        elif state == "idle":
            total += len(pool._available_connections)
        else:
            total += pool.max_connections
    return total


for _state in ("in_use", "idle", "max"):
    metrics.REDIS_POOL_CONNECTIONS.labels(_state).set_function(partial(pool_connections, _state))


def create_redis(settings: Settings, *, decode: bool = True) -> aioredis.Redis:
    """`decode=False`: values come back as bytes (the hotset's binary vectors)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
        settings.redis_url.get_secret_value(),
        password=password,
        decode_responses=decode,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    _POOLS.add(client.connection_pool)
    return client
