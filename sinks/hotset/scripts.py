"""The one loader of the hotset's Lua scripts (lua/*.lua): the sink's, the gateway's, the rate
limiter's and the API key cache's.

Each source is read from the package once per process. `script` binds it to a client as redis-py's
Script: a call runs EVALSHA and, when the server's script cache lacks it (first use, SCRIPT FLUSH,
a restart), loads it and retries; called with `client=pipeline`, the script is queued in the
pipeline, which loads any missing script before it executes. On Redis Cluster the client from
app/redis_client.py does the same on every primary (docs/adr/0011-redis-cluster-one-slot-per-tenant.md).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript


class Lua(StrEnum):
    """Every hotset script, by its file name in lua/ (without `.lua`)."""

    APPLY = "hotset_apply"  # sink: apply one tenant's write intents
    STATE = "hotset_state"  # sink: read what the planner needs for one tenant's batch
    REWARM = "rewarm"  # gateway: re-warm one memory from the warehouse, version-guarded
    SEARCH_CANDIDATES = "search_candidates"  # gateway: stage 1 of search
    CONTEXT_PAGES = "context_pages"  # gateway: the index pages of a context call and their memories
    PRUNE = "prune"  # gateway: drop index members whose memory is gone
    RATELIMIT = "ratelimit"  # auth: token buckets, all or nothing
    APIKEY_MERGE = "apikey_merge"  # auth: cache an API key record, never undoing a revocation
    VECTORS = "vectors_apply"  # embedding agent: write or drop one tenant's vectors


@cache
def source(name: Lua) -> str:
    return resources.files(__package__).joinpath("lua", f"{name.value}.lua").read_text(encoding="utf-8")


def script(redis: aioredis.Redis, name: Lua) -> AsyncScript:
    """`name` bound to `redis`: `await s(keys=[...], args=[...], client=pipe_or_none)`."""
    return redis.register_script(source(name))
