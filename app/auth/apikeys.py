"""Tenant API keys: `msk_<prefix>_<secret>`, shown once, stored only as a hash.

The prefix is public (it is the lookup id and the `KEY_ID` of `memstream keys`); the secret
never leaves the creating process. The stored hash is HMAC-SHA256 under a server pepper when one
is configured (a stolen Redis dump then cannot be brute-forced offline), else SHA-256 (the
secret has 256 bits of entropy, so a plain hash is still not reversible).
Pure functions here; `ApiKeyStore` is the thin Redis adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar, cast

import redis.asyncio as aioredis

from app.auth.errors import Unauthenticated
from app.auth.principal import Principal, Role, parse_roles, valid_agent, valid_tenant
from app.auth.secrets import SecretPair
from sinks.hotset import keys
from sinks.hotset.scripts import Lua, script

if TYPE_CHECKING:
    from app.auth.registry import KeyRegistry

log = logging.getLogger(__name__)

SCHEME = "msk"
_KEY_RE = re.compile(r"^msk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
ALG_HMAC = "hmac-sha256"
ALG_SHA = "sha256"
T = TypeVar("T")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def generate_api_key() -> tuple[str, str]:
    """(prefix, full key). 64-bit public prefix, 256-bit secret."""
    prefix = secrets.token_hex(8)
    return prefix, f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else None (malformed input never reaches Redis)."""
    m = _KEY_RE.fullmatch(key)
    return m.group(1) if m else None


def hash_api_key(key: str, pepper: bytes | None) -> tuple[str, str]:
    """(algorithm, hex digest) of the whole key string (the prefix is bound into the hash)."""
    if pepper:
        return ALG_HMAC, hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()
    return ALG_SHA, hashlib.sha256(key.encode()).hexdigest()


def parse_duration(text: str) -> int:
    """'30d', '12h', '90m', '45s', '2w' or plain seconds -> seconds (> 0)."""
    m = _DURATION_RE.fullmatch(text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r} (examples: 30d, 12h, 90m, 3600)")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class ApiKeyRecord:
    prefix: str
    tenant_id: str
    roles: frozenset[Role]
    key_hash: str
    hash_alg: str
    created_at: float
    agent_id: str | None = None
    name: str | None = None
    expires_at: float | None = None
    revoked: bool = False
    revoked_at: float | None = None

    def to_redis(self) -> dict[str, str]:
        return {
            "tenant": self.tenant_id,
            "roles": ",".join(sorted(r.value for r in self.roles)),
            "hash": self.key_hash,
            "alg": self.hash_alg,
            "created_at": repr(self.created_at),
            "agent_id": self.agent_id or "",
            "name": self.name or "",
            "expires_at": repr(self.expires_at) if self.expires_at is not None else "",
            "revoked": "1" if self.revoked else "0",
            "revoked_at": repr(self.revoked_at) if self.revoked_at is not None else "",
        }

    @classmethod
    def from_redis(cls, prefix: str, h: dict[str, str]) -> ApiKeyRecord | None:
        if not h or "hash" not in h or "tenant" not in h:
            return None
        return cls(
            prefix=prefix,
            tenant_id=h["tenant"],
            roles=parse_roles(h.get("roles", "")),
            key_hash=h["hash"],
            hash_alg=h.get("alg", ALG_SHA),
            created_at=float(h.get("created_at") or 0),
            agent_id=h.get("agent_id") or None,
            name=h.get("name") or None,
            expires_at=float(h["expires_at"]) if h.get("expires_at") else None,
            # Anything but an explicit "0" counts as revoked: fail closed on a damaged record.
            revoked=h.get("revoked", "1") != "0",
            revoked_at=float(h["revoked_at"]) if h.get("revoked_at") else None,
        )

    def public(self) -> dict[str, object]:
        """What `keys list` shows: everything but the hash."""
        return {
            "key_id": self.prefix,
            "tenant_id": self.tenant_id,
            "roles": sorted(r.value for r in self.roles),
            "agent_id": self.agent_id,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }


def new_api_key(
    tenant_id: str,
    roles: frozenset[Role],
    pepper: bytes | None,
    now: float,
    agent_id: str | None = None,
    name: str | None = None,
    expires_in_s: int | None = None,
) -> tuple[str, ApiKeyRecord]:
    if not valid_tenant(tenant_id):
        raise ValueError("tenant id must match [A-Za-z0-9_.-]{1,64}")
    if not roles:
        raise ValueError("an API key needs at least one role")
    if agent_id is not None and not valid_agent(agent_id):
        raise ValueError("agent id must be 1-128 characters")
    prefix, key = generate_api_key()
    alg, digest = hash_api_key(key, pepper)
    record = ApiKeyRecord(
        prefix=prefix,
        tenant_id=tenant_id,
        roles=roles,
        key_hash=digest,
        hash_alg=alg,
        created_at=now,
        agent_id=agent_id,
        name=name,
        expires_at=now + expires_in_s if expires_in_s else None,
    )
    return key, record


# Compared against when the prefix is unknown so both paths do the same work.
_DUMMY = ApiKeyRecord("0" * 16, "-", frozenset(), "0" * 64, ALG_SHA, 0.0, revoked=True)


def verify_api_key(
    presented: str, record: ApiKeyRecord | None, pepper: bytes | None, now: float, previous: bytes | None = None
) -> Principal:
    """The principal of a presented key, or Unauthenticated (one message for every failure).
    A key hashed under the `previous` pepper still verifies while one is set (rotation)."""
    rec = record or _DUMMY
    if rec.hash_alg == ALG_HMAC and not pepper:
        # Stored under a pepper this server does not have: never fall back to a weaker check.
        # The caller sees the same answer as for an unknown key; operators see the log line.
        log.error("API key %s was issued under a pepper but MEMSTREAM_API_KEY_PEPPER is unset", rec.prefix)
        raise Unauthenticated("invalid API key", reason="key_unknown")
    peppers = [pepper, previous] if rec.hash_alg == ALG_HMAC and previous else [pepper]
    matches = False
    for p in peppers:
        _, digest = hash_api_key(presented, p if rec.hash_alg == ALG_HMAC else None)
        matches = hmac.compare_digest(digest, rec.key_hash) or matches
    if record is None or not matches:
        raise Unauthenticated("invalid API key", reason="key_unknown")
    # Only the holder of the right secret gets this far, so telling them why is harmless.
    if record.revoked:
        raise Unauthenticated("invalid API key", reason="key_revoked")
    if record.expires_at is not None and now >= record.expires_at:
        raise Unauthenticated("invalid API key", reason="key_expired")
    return Principal(
        tenant_id=record.tenant_id,
        principal_id=f"key:{record.prefix}",
        kind="api_key",
        roles=record.roles,
        agent_id=record.agent_id,
        key_id=record.prefix,
    )


def _aw(value: Awaitable[T] | T) -> Awaitable[T]:
    """redis-py types its commands as sync-or-async; the asyncio client always returns awaitables."""
    return cast(Awaitable[T], value)


def _flat(record: ApiKeyRecord) -> list[str]:
    out: list[str] = []
    for k, v in record.to_redis().items():
        out += [k, v]
    return out


class ApiKeyStore:
    """Redis cache in front of the system of record (`registry`: AI_MEMORY.API_KEYS). Every
    authentication reads the cached record, so a revocation applies at once; a record missing
    from Redis (a wipe) is read from the registry, bounded and negatively cached."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pepper: bytes | None = None,
        registry: KeyRegistry | None = None,
        peppers: SecretPair | None = None,
        negative_ttl_s: float = 60.0,
        lookup_concurrency: int = 4,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.peppers = peppers or SecretPair.fixed(pepper)
        self.negative_ttl_s = negative_ttl_s
        self._lookups = asyncio.Semaphore(lookup_concurrency)
        self._inflight: dict[str, asyncio.Future[ApiKeyRecord | None]] = {}
        self._merge = script(redis, Lua.APIKEY_MERGE)

    @property
    def pepper(self) -> bytes | None:
        return self.peppers.current.get()

    async def create(
        self,
        tenant_id: str,
        roles: frozenset[Role],
        agent_id: str | None = None,
        name: str | None = None,
        expires_in_s: int | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        while True:
            key, record = new_api_key(tenant_id, roles, self.pepper, time.time(), agent_id, name, expires_in_s)
            # HSETNX on the hash field claims the prefix; a (2^-64) collision simply retries.
            if await _aw(self.redis.hsetnx(keys.api_key(record.prefix), "hash", record.key_hash)):
                break
        if self.registry is not None:
            try:
                await self.registry.insert(record)  # the system of record first
            except BaseException:
                await _aw(self.redis.delete(keys.api_key(record.prefix)))
                raise
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.api_key(record.prefix), mapping=record.to_redis())
        pipe.sadd(keys.api_keys_of(tenant_id), record.prefix)
        pipe.delete(keys.api_key_unknown(record.prefix))
        await pipe.execute()
        return key, record

    async def get(self, prefix: str) -> ApiKeyRecord | None:
        return ApiKeyRecord.from_redis(prefix, await _aw(self.redis.hgetall(keys.api_key(prefix))))

    async def cache(self, record: ApiKeyRecord) -> None:
        """Copy a record from the registry into Redis (never undoing a cached revocation)."""
        await self._merge(
            keys=[keys.api_key(record.prefix)],
            args=[
                "1" if record.revoked else "0",
                record.prefix,
                repr(record.revoked_at) if record.revoked_at is not None else "",
                *_flat(record),
            ],
        )
        # Another slot than the hash on Redis Cluster: a separate, idempotent command.
        await _aw(self.redis.sadd(keys.api_keys_of(record.tenant_id), record.prefix))

    async def lookup(self, prefix: str) -> ApiKeyRecord | None:
        """The cached record, else the registry's (cached on the way), else None. Unknown ids
        are remembered for `negative_ttl_s`; one registry query per id at a time per process,
        at most `lookup_concurrency` at once."""
        record = await self.get(prefix)
        if record is not None or self.registry is None:
            return record
        if await _aw(self.redis.exists(keys.api_key_unknown(prefix))):
            return None
        pending = self._inflight.get(prefix)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ApiKeyRecord | None] = asyncio.get_running_loop().create_future()
        self._inflight[prefix] = future
        try:
            async with self._lookups:
                found = await self.registry.get(prefix)
            if found is None:
                if self.negative_ttl_s > 0:
                    await _aw(self.redis.set(keys.api_key_unknown(prefix), "1", px=int(self.negative_ttl_s * 1000)))
            else:
                await self.cache(found)
                found = await self.get(prefix) or found  # what Redis holds now (a revocation wins)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
            raise
        finally:
            del self._inflight[prefix]

    async def list(self, tenant_id: str) -> list[ApiKeyRecord]:
        if self.registry is not None:
            return sorted(await self.registry.all(tenant_id), key=lambda r: r.created_at)
        prefixes = sorted(await _aw(self.redis.smembers(keys.api_keys_of(tenant_id))))
        records = [await self.get(p) for p in prefixes]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def revoke(self, prefix: str) -> ApiKeyRecord | None:
        """Revoked in the registry, then in Redis (whether Redis held the key or not)."""
        registered = await self.registry.get(prefix) if self.registry is not None else None
        record = registered or await self.get(prefix)  # a key made before the registry: Redis only
        if record is None:
            return None
        if not record.revoked:
            record = replace(record, revoked=True, revoked_at=time.time())
            if self.registry is not None and registered is not None:
                await self.registry.revoke(prefix, record.revoked_at or time.time())
        await self.cache(record)
        return await self.get(prefix) or record

    async def refill(self, tenant_id: str | None = None) -> int:
        """Copy every key of the registry (or a tenant's) into Redis (`memstream rebuild`)."""
        if self.registry is None:
            return 0
        records = await self.registry.all(tenant_id)
        for record in records:
            await self.cache(record)
        return len(records)

    async def authenticate(self, presented: str) -> Principal:
        prefix = key_prefix(presented)
        if prefix is None:
            raise Unauthenticated("invalid API key", reason="key_malformed")
        record = await self.lookup(prefix)
        return verify_api_key(presented, record, self.pepper, time.time(), self.peppers.previous.get())
