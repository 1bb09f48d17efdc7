"""Whether the hotset holds every live memory of a tenant, so that a search it cannot fill need
not ask the warehouse (docs/adr/0012-hotset-coverage.md).

The worker records in the tenant's coverage hash (keys.coverage) where this hotset began to hold the tenant
(`cover_from`: the events partition and the lowest offset it applied, `cover_ms`: when) and the
shortest TTL it stored (`ttl_min`). The hotset is whole for the tenant when nothing it stored can
have expired yet (now - cover_ms < ttl_min), Redis has evicted nothing, and the warehouse holds
no live, unsuperseded memory from before `cover_from` (one COUNT, trusted for
`search_coverage_check_s` per gateway). After a Redis loss the worker records a new, later
`cover_from`, and the warehouse's older memories make the tenant partial again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from app.gateway.warehouse import Warehouse, WarehouseUnavailable
from sinks.hotset import keys

log = logging.getLogger(__name__)

FIELDS = ("cover_from", "cover_ms", "ttl_min")
MAX_TENANTS = 10_000  # verdicts a gateway keeps (least recently checked out first)


@dataclass(frozen=True)
class Cover:
    partition: int
    offset: int
    since_ms: int
    ttl_min_s: int

    def unexpired(self, now_ms: float) -> bool:
        """Nothing stored since `since_ms` can have expired yet."""
        return now_ms - self.since_ms < self.ttl_min_s * 1000


def parse(raw: Sequence[str | None]) -> Cover | None:
    """The coverage hash fields FIELDS as a Cover, or None when the worker has not recorded them."""
    cover_from, since, ttl = raw
    if not cover_from or not since or not ttl:
        return None
    part, _, off = cover_from.partition(":")
    try:
        return Cover(int(part), int(off), int(since), int(ttl))
    except ValueError:
        return None


def evicted_keys(info: dict[str, Any]) -> int:
    """`evicted_keys` of INFO stats: one server's, or summed over a cluster's nodes."""
    if "evicted_keys" in info:
        return int(info["evicted_keys"])
    return sum(int(v.get("evicted_keys", 0)) for v in info.values() if isinstance(v, dict))


class Coverage:
    def __init__(self, redis: aioredis.Redis, warehouse: Warehouse, check_s: float) -> None:
        self.redis, self.warehouse, self.check_s = redis, warehouse, check_s
        self._verdicts: OrderedDict[str, tuple[str, float, bool]] = OrderedDict()  # cover_from, when, whole
        self._checking: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._evicted = False
        self._evictions_read = -float("inf")

    async def whole(self, tenant: str) -> bool:
        """True when the hotset provably holds every live, unsuperseded memory of the tenant."""
        if self.check_s <= 0:
            return False
        raw: list[str | None] = await self.redis.hmget(keys.coverage(tenant), list(FIELDS))  # type: ignore[misc]
        cover = parse(raw)
        if cover is None or not cover.unexpired(time.time() * 1000) or await self._evicting():
            return False
        cover_from = str(raw[0])
        now = time.monotonic()
        cached = self._verdicts.get(tenant)
        if cached is not None and cached[0] == cover_from and now - cached[1] < self.check_s:
            return cached[2]
        key = (tenant, cover_from)
        pending = self._checking.get(key)
        if pending is None:  # one warehouse check per tenant at a time
            pending = asyncio.ensure_future(self._check(tenant, cover, cover_from))
            self._checking[key] = pending
            pending.add_done_callback(lambda _: self._checking.pop(key, None))
        return await asyncio.shield(pending)

    async def _check(self, tenant: str, cover: Cover, cover_from: str) -> bool:
        try:
            n = await self.warehouse.uncovered(tenant, cover.partition, cover.offset)
        except WarehouseUnavailable:
            return False  # the search's own warehouse call reports it
        whole = n == 0
        self._verdicts.pop(tenant, None)
        self._verdicts[tenant] = (cover_from, time.monotonic(), whole)
        while len(self._verdicts) > MAX_TENANTS:
            self._verdicts.popitem(last=False)
        return whole

    async def _evicting(self) -> bool:
        """Whether Redis has evicted keys (then no tenant is provably whole), read every check_s."""
        now = time.monotonic()
        if now - self._evictions_read >= self.check_s:
            self._evictions_read = now
            try:
                self._evicted = evicted_keys(await self.redis.info("stats")) > 0
            except Exception as exc:  # noqa: BLE001 - a server without INFO: assume the worst
                log.debug("INFO stats failed: %s", exc)
                self._evicted = True
        return self._evicted
