"""API keys outlive their cache, and secrets rotate without downtime: real keys, a real gateway
on its own redis-server (so FLUSHALL wipes nothing of other tests), the warehouse emulator."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from app import devstack
from app.auth.apikeys import ApiKeyStore, key_prefix
from app.auth.principal import Role
from app.auth.registry import KeyRegistry
from app.gateway.warehouse import Warehouse
from app.rebuild import refill_api_keys
from app.settings import Settings
from sinks.hotset import keys
from tests.support.auth import AUDIENCE, ISSUER, claims
from tests.support.gateway import Gateway, running
from tests.support.stack import ROOT, Stack

STATS = "/api/v2/memory/stats"
OLD, NEW = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32


@pytest.fixture(scope="module")
def own_redis(stack: Stack) -> Iterator[redis.Redis]:
    log_dir = stack.tmp / f"authz-redis-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir()
    svc = devstack.redis_service(devstack.free_port(), log_dir).start()
    client = redis.Redis(port=svc.port, decode_responses=True)
    yield client
    client.close()
    svc.stop()


def own_settings(stack: Stack, rds: redis.Redis, **over: Any) -> Settings:
    port = rds.connection_pool.connection_kwargs["port"]
    values: dict[str, Any] = {
        "redis_url": f"redis://127.0.0.1:{port}/0",
        "dev_tenant_header_enabled": False,
        "api_key_pepper": "registry-test-pepper",
        "api_key_negative_cache_s": 60,
    }
    values.update(over)
    return stack.settings(**values)


@pytest.fixture
async def gw(stack: Stack, own_redis: redis.Redis) -> AsyncIterator[Gateway]:
    async with running(own_settings(stack, own_redis)) as g:
        yield g


def cli(stack: Stack, rds: redis.Redis, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    port = rds.connection_pool.connection_kwargs["port"]
    full = {
        **os.environ,
        **stack.env,
        "MEMSTREAM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "MEMSTREAM_API_KEY_PEPPER": "registry-test-pepper",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv], env=full, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


async def test_a_key_survives_flushall_and_a_revocation_applies_after_a_wipe(
    gw: Gateway, stack: Stack, own_redis: redis.Redis, tenant: str
) -> None:
    made = cli(stack, own_redis, "keys", "create", "--tenant", tenant, "--role", "reader")
    assert made.returncode == 0, made.stderr
    key = orjson.loads(made.stdout)["api_key"]
    assert (await gw.client.get(STATS, headers={"X-API-Key": key})).status_code == 200

    own_redis.flushall()
    r = await gw.client.get(STATS, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text  # read back from AI_MEMORY.API_KEYS
    assert own_redis.hget(keys.api_key(key_prefix(key) or ""), "tenant") == tenant  # and cached again

    own_redis.flushall()
    revoked = cli(stack, own_redis, "keys", "revoke", key_prefix(key) or "")
    assert revoked.returncode == 0, revoked.stderr
    r = await gw.client.get(STATS, headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "key_revoked"}
    own_redis.flushall()
    r = await gw.client.get(STATS, headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "key_revoked"}
    listed = cli(stack, own_redis, "keys", "list", "--tenant", tenant)
    assert [orjson.loads(line)["revoked"] for line in listed.stdout.splitlines()] == [True]


async def test_a_refill_never_undoes_a_revocation(gw: Gateway, own_redis: redis.Redis, tenant: str) -> None:
    store: ApiKeyStore = gw.app.state.security.authenticator.api_keys
    key, record = await store.create(tenant, frozenset({Role.READER}))
    stale = record  # what a gateway read from the warehouse just before the revocation
    await store.revoke(record.prefix)
    await store.cache(stale)  # that gateway's refill lands after it
    r = await gw.client.get(STATS, headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "key_revoked"}


async def test_unknown_keys_are_negatively_cached(gw: Gateway, own_redis: redis.Redis, tenant: str) -> None:
    store: ApiKeyStore = gw.app.state.security.authenticator.api_keys
    calls: list[str] = []
    assert store.registry is not None
    real = store.registry.get

    async def counting(prefix: str) -> Any:
        calls.append(prefix)
        return await real(prefix)

    store.registry.get = counting  # type: ignore[method-assign]
    try:
        unknown = f"msk_{uuid.uuid4().hex[:16]}_{'A' * 43}"
        for _ in range(20):
            r = await gw.client.get(STATS, headers={"X-API-Key": unknown})
            assert r.status_code == 401
        assert len(calls) == 1  # one warehouse query; the other 19 answered from Redis
        assert own_redis.exists(keys.api_key_unknown(key_prefix(unknown) or ""))
        # A key created afterwards is not hidden by a negative entry of its own id.
        key, _ = await store.create(tenant, frozenset({Role.READER}))
        assert (await gw.client.get(STATS, headers={"X-API-Key": key})).status_code == 200
    finally:
        store.registry.get = real  # type: ignore[method-assign]


async def test_rebuild_refills_keys(stack: Stack, own_redis: redis.Redis, tenant: str) -> None:
    settings = own_settings(stack, own_redis)
    warehouse = Warehouse(settings)
    try:
        store = ApiKeyStore(
            aioredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True),
            b"registry-test-pepper",
            registry=KeyRegistry(warehouse.query, settings.snowflake_schema),
        )
        key, record = await store.create(tenant, frozenset({Role.WRITER}), agent_id="planner")
        own_redis.flushall()
        assert await refill_api_keys(settings, store.redis, tenant) == 1
        assert own_redis.hget(keys.api_key(record.prefix), "agent_id") == "planner"
        store.registry = None  # Redis alone answers now
        assert (await store.authenticate(key)).agent_id == "planner"
        await store.redis.aclose()
    finally:
        warehouse.close()


async def test_pepper_rotation_keeps_old_keys_until_the_previous_is_removed(
    stack: Stack, own_redis: redis.Redis, tenant: str
) -> None:
    async with running(own_settings(stack, own_redis, api_key_pepper=OLD)) as before:
        old_key, _ = await before.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.READER}))
    rotating = own_settings(stack, own_redis, api_key_pepper=NEW, api_key_pepper_previous=OLD)
    async with running(rotating) as during:
        new_key, _ = await during.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.READER}))
        for k in (old_key, new_key):
            assert (await during.client.get(STATS, headers={"X-API-Key": k})).status_code == 200
    async with running(own_settings(stack, own_redis, api_key_pepper=NEW)) as after:
        assert (await after.client.get(STATS, headers={"X-API-Key": new_key})).status_code == 200
        assert (await after.client.get(STATS, headers={"X-API-Key": old_key})).status_code == 401


async def test_hs256_secret_rotates_through_its_file(
    stack: Stack, own_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    current, previous = tmp_path / "hs", tmp_path / "hs-previous"
    current.write_text(OLD)
    previous.write_text("")
    monkeypatch.setenv("MEMSTREAM_JWT_HS256_SECRET_FILE", str(current))
    monkeypatch.setenv("MEMSTREAM_JWT_HS256_SECRET_PREVIOUS_FILE", str(previous))
    settings = own_settings(
        stack, own_redis, jwt_hs256_secret=OLD, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, secret_file_check_s=0
    )

    def token(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {jwt.encode(claims(tenant, roles=['reader']), secret, algorithm='HS256')}"}

    async with running(settings) as g:
        assert (await g.client.get(STATS, headers=token(OLD))).status_code == 200
        # Vault Agent / a mounted secret writes the new value, the old one moves to previous.
        replace_file(previous, OLD)
        replace_file(current, NEW)
        for secret in (OLD, NEW):
            assert (await g.client.get(STATS, headers=token(secret))).status_code == 200, secret
        replace_file(previous, "")  # the old secret removed: no restart
        assert (await g.client.get(STATS, headers=token(NEW))).status_code == 200
        r = await g.client.get(STATS, headers=token(OLD))
        assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "signature"}


async def test_signing_secret_rotation(stack: Stack, own_redis: redis.Redis, tenant: str) -> None:
    def signed(secret: str, body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        canonical = "\n".join(["POST", "/api/v2/memory/store", ts, hashlib.sha256(body).hexdigest()]).encode()
        sig = "v1=" + hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()
        return {"X-Memstream-Timestamp": ts, "X-Memstream-Signature": sig, "content-type": "application/json"}

    async def post(g: Gateway, key: str, secret: str) -> int:
        body = orjson.dumps({"type": "event", "content": {"text": uuid.uuid4().hex}})
        r = await g.client.post(
            "/api/v2/memory/store", content=body, headers={"X-API-Key": key, **signed(secret, body)}
        )
        return r.status_code

    rotating = own_settings(
        stack, own_redis, request_signing_secret=NEW, request_signing_secret_previous=OLD, request_signing_required=True
    )
    async with running(rotating) as g:
        key, _ = await g.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.WRITER}))
        assert await post(g, key, OLD) == 202 and await post(g, key, NEW) == 202
        assert await post(g, key, "x" * 40) == 401
    done = own_settings(stack, own_redis, request_signing_secret=NEW, request_signing_required=True)
    async with running(done) as g:
        assert await post(g, key, NEW) == 202 and await post(g, key, OLD) == 401


def replace_file(path: Path, text: str) -> None:
    """As Kubernetes and Vault Agent do: write beside, rename over (a new inode, a new mtime)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    stamp = time.time_ns() + 1_000_000_000  # later than any earlier write's, whatever the clock's resolution
    os.utime(tmp, ns=(stamp, stamp))
    tmp.replace(path)
