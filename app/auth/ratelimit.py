"""Per-credential and per-tenant rate limits: token buckets in Redis, shared by every gateway
instance, checked and taken atomically by one Lua script (EVALSHA with a fallback to load)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from app.auth.errors import RateLimited
from app.auth.principal import Principal
from app.settings import Settings
from sinks.hotset import Lua, keys, script

Scope = Literal["key", "tenant"]


@dataclass(frozen=True)
class Limit:
    per_minute: int
    burst_factor: float = 1.0

    @property
    def capacity(self) -> int:
        return max(1, math.ceil(self.per_minute * self.burst_factor))

    @property
    def rate_per_ms(self) -> float:
        return self.per_minute / 60_000.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: int = 0
    remaining: int | None = None
    scope: Scope | None = None  # which bucket refused


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, per_key: Limit | None, per_tenant: Limit | None) -> None:
        self.redis = redis
        self.per_key = per_key if per_key and per_key.per_minute > 0 else None
        self.per_tenant = per_tenant if per_tenant and per_tenant.per_minute > 0 else None
        self._script = script(redis, Lua.RATELIMIT)

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, s: Settings) -> RateLimiter:
        burst = s.rate_limit_burst_factor
        return cls(
            redis,
            Limit(s.rate_limit_per_key_per_minute, burst),
            Limit(s.rate_limit_per_tenant_per_minute, burst),
        )

    async def hit(self, principal: Principal, cost: int = 1) -> RateDecision:
        buckets: list[tuple[str, Limit, Scope]] = []
        if self.per_key:
            own = keys.rate_bucket_principal(principal.tenant_id, principal.principal_id)
            buckets.append((own, self.per_key, "key"))
        if self.per_tenant:
            buckets.append((keys.rate_bucket_tenant(principal.tenant_id), self.per_tenant, "tenant"))
        if not buckets:
            return RateDecision(True)
        args: list[str | int] = [cost]
        for _, limit, _ in buckets:
            args.extend((limit.capacity, repr(limit.rate_per_ms)))
        allowed, wait_ms, remaining, refused = await self._script(keys=[b[0] for b in buckets], args=args)
        if int(allowed):
            return RateDecision(True, remaining=int(remaining))
        return RateDecision(
            False, retry_after_s=max(1, math.ceil(int(wait_ms) / 1000)), scope=buckets[int(refused) - 1][2]
        )

    async def check(self, principal: Principal, cost: int = 1) -> RateDecision:
        decision = await self.hit(principal, cost)
        if not decision.allowed:
            scope = decision.scope
            raise RateLimited(f"rate limit exceeded ({scope})", decision.retry_after_s, reason=f"rate_{scope}")
        return decision
