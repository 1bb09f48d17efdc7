"""Security adapters against a real redis-server: API keys, rate limits, signature replays, JWKS
from a loopback URL, and the `memstream keys` command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.auth.apikeys import ApiKeyStore
from app.auth.authenticator import Authenticator
from app.auth.errors import AuthUnavailable, RateLimited, Unauthenticated
from app.auth.jwt_auth import JwksProvider, JwtConfig, JwtVerifier
from app.auth.principal import Principal, Role
from app.auth.ratelimit import Limit, RateLimiter
from app.auth.signing import ReplayGuard, sign_request
from sinks.hotset import keys
from tests.support.auth import AUDIENCE, HS_SECRET, ISSUER, KeyPair, claims
from tests.support.stack import ROOT, Stack


@pytest.fixture
async def ardis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = stack.async_redis()
    yield client
    await client.aclose()


@pytest.fixture
async def ardis2(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    """A second, independent connection: another gateway instance."""
    client = stack.async_redis()
    yield client
    await client.aclose()


def who(tenant: str, pid: str = "key:k1") -> Principal:
    return Principal(tenant_id=tenant, principal_id=pid, kind="api_key", roles=frozenset({Role.READER}))


# --- API keys ----------------------------------------------------------------------------


async def test_api_key_lifecycle(ardis: aioredis.Redis, ardis2: aioredis.Redis, rds: redis.Redis, tenant: str) -> None:
    store = ApiKeyStore(ardis, b"pepper")
    other_gateway = ApiKeyStore(ardis2, b"pepper")
    key, rec = await store.create(tenant, frozenset({Role.WRITER}), agent_id="a1", name="ci")
    p = await other_gateway.authenticate(key)
    assert (p.tenant_id, p.roles, p.agent_id, p.principal_id) == (
        tenant,
        {Role.WRITER},
        "a1",
        f"key:{rec.prefix}",
    )
    # Only a hash is stored: neither the key nor its secret part appears anywhere in Redis.
    stored = rds.hgetall(keys.api_key(rec.prefix))
    assert key not in json.dumps(stored) and key.split("_", 2)[2] not in json.dumps(stored)
    assert stored["alg"] == "hmac-sha256" and len(stored["hash"]) == 64
    assert [r.prefix for r in await store.list(tenant)] == [rec.prefix]
    # Revocation through one instance is refused by the other at once (no cache).
    revoked = await store.revoke(rec.prefix)
    assert revoked is not None and revoked.revoked and revoked.revoked_at
    with pytest.raises(Unauthenticated) as info:
        await other_gateway.authenticate(key)
    assert info.value.reason == "key_revoked"
    assert (await store.list(tenant))[0].revoked
    assert await store.revoke("0000000000000000") is None


async def test_expired_api_key_refused_at_once(ardis: aioredis.Redis, tenant: str) -> None:
    store = ApiKeyStore(ardis)
    key, _ = await store.create(tenant, frozenset({Role.READER}), expires_in_s=1)
    assert (await store.authenticate(key)).tenant_id == tenant
    await asyncio.sleep(1.05)
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(key)
    assert info.value.reason == "key_expired"


async def test_api_key_wrong_secret_unknown_prefix_and_pepper(ardis: aioredis.Redis, tenant: str) -> None:
    store = ApiKeyStore(ardis, b"pepper")
    key, rec = await store.create(tenant, frozenset({Role.READER}))
    forged = f"msk_{rec.prefix}_{'A' * 43}"
    unknown = f"msk_{'f' * 16}_{key.split('_', 2)[2]}"
    for presented, store_ in [(forged, store), (unknown, store), (key, ApiKeyStore(ardis, b"rotated"))]:
        with pytest.raises(Unauthenticated) as info:
            await store_.authenticate(presented)
        assert info.value.message == "invalid API key"
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate("not-a-key")
    assert info.value.reason == "key_malformed"


def run_cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_keys_cli(stack: Stack, ardis: aioredis.Redis, tenant: str) -> None:
    out = run_cli(
        stack,
        "create",
        "--tenant",
        tenant,
        "--role",
        "writer",
        "--role",
        "reader",
        "--agent",
        "bot",
        "--expires-in",
        "30d",
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    key, key_id = created["api_key"], created["key_id"]
    assert created["roles"] == ["reader", "writer"] and created["agent_id"] == "bot" and created["expires_at"]
    assert "cannot be shown again" in out.stderr
    assert (await ApiKeyStore(ardis).authenticate(key)).tenant_id == tenant

    listed = run_cli(stack, "list", "--tenant", tenant)
    assert listed.returncode == 0 and key.split("_", 2)[2] not in listed.stdout and "hash" not in listed.stdout
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["key_id"], r["revoked"]) for r in rows] == [(key_id, False)]

    assert run_cli(stack, "revoke", key_id).returncode == 0
    with pytest.raises(Unauthenticated):
        await ApiKeyStore(ardis).authenticate(key)
    assert json.loads(run_cli(stack, "list", "--tenant", tenant).stdout)["revoked"] is True
    assert run_cli(stack, "revoke", "ffffffffffffffff").returncode == 1
    bad = run_cli(stack, "create", "--tenant", tenant, "--role", "writer", "--expires-in", "soon")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
    assert run_cli(stack, "create", "--tenant", tenant, "--role", "root").returncode == 2


# --- rate limits -------------------------------------------------------------------------


async def test_two_instances_share_one_limit(ardis: aioredis.Redis, ardis2: aioredis.Redis, tenant: str) -> None:
    a = RateLimiter(ardis, Limit(5), None)
    b = RateLimiter(ardis2, Limit(5), None)
    decisions = [await (a if i % 2 else b).hit(who(tenant)) for i in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    refused = decisions[-1]
    # 5 per minute: one token every 12 s.
    assert refused.scope == "key" and 1 <= refused.retry_after_s <= 12
    with pytest.raises(RateLimited) as info:
        await a.check(who(tenant))
    assert info.value.status == 429 and info.value.retry_after_s == refused.retry_after_s
    # Another credential of the same tenant, and another tenant, have their own buckets.
    assert (await a.hit(who(tenant, "key:k2"))).allowed
    assert (await b.hit(who(tenant + "x"))).allowed


async def test_limit_is_atomic_under_concurrency(ardis: aioredis.Redis, ardis2: aioredis.Redis, tenant: str) -> None:
    a = RateLimiter(ardis, Limit(1000), Limit(20))
    b = RateLimiter(ardis2, Limit(1000), Limit(20))
    results = await asyncio.gather(*[(a if i % 2 else b).hit(who(tenant, f"key:k{i % 7}")) for i in range(60)])
    assert sum(d.allowed for d in results) == 20
    assert {d.scope for d in results if not d.allowed} == {"tenant"}


async def test_tokens_refill_and_buckets_expire(ardis: aioredis.Redis, rds: redis.Redis, tenant: str) -> None:
    limiter = RateLimiter(ardis, Limit(600), Limit(6000))  # 10 per second per key
    allowed = 0
    while (await limiter.hit(who(tenant))).allowed and allowed < 1000:
        allowed += 1
    assert 600 <= allowed < 650  # the burst, plus what refilled while we spent it
    await asyncio.sleep(0.35)  # ~3 tokens back
    again = [await limiter.hit(who(tenant)) for _ in range(6)]
    assert 2 <= sum(d.allowed for d in again) <= 4
    ttl = rds.pttl(keys.rate_bucket_principal(tenant, "key:k1"))
    assert 0 < ttl <= 61_000  # a bucket disappears once it would be full again


async def test_script_reloads_after_flush(ardis: aioredis.Redis, rds: redis.Redis, tenant: str) -> None:
    limiter = RateLimiter(ardis, Limit(100), Limit(100))
    assert (await limiter.hit(who(tenant))).allowed
    rds.script_flush()  # EVALSHA then misses: redis-py falls back to loading the script
    assert (await limiter.hit(who(tenant))).allowed


async def test_disabled_limits(ardis: aioredis.Redis, tenant: str) -> None:
    limiter = RateLimiter(ardis, Limit(0), None)
    assert all([(await limiter.hit(who(tenant))).allowed for _ in range(5)])


# --- signed requests ---------------------------------------------------------------------


async def test_signed_request_replay_and_expiry_refused(stack: Stack, ardis: aioredis.Redis, tenant: str) -> None:
    settings = stack.settings(
        request_signing_secret="sign-me", request_signing_required=True, request_signing_window_s=60
    )
    auth = Authenticator.from_settings(settings, ardis)
    body = json.dumps({"tenant": tenant}).encode()
    now = str(int(time.time()))
    headers = {
        "X-Memstream-Timestamp": now,
        "X-Memstream-Signature": sign_request(b"sign-me", "POST", "/api/v2/memory/store", now, body),
    }
    await auth.check_signature("POST", "/api/v2/memory/store", headers, body)
    # The same request again, through a second instance: a replay.
    other = Authenticator.from_settings(settings, stack.async_redis())
    with pytest.raises(Unauthenticated) as info:
        await other.check_signature("POST", "/api/v2/memory/store", headers, body)
    assert info.value.reason == "signature_replay"
    await other.replay.redis.aclose()  # type: ignore[union-attr]
    old = str(int(time.time()) - 120)
    stale = {
        "X-Memstream-Timestamp": old,
        "X-Memstream-Signature": sign_request(b"sign-me", "POST", "/api/v2/memory/store", old, body),
    }
    with pytest.raises(Unauthenticated) as info:
        await auth.check_signature("POST", "/api/v2/memory/store", stale, body)
    assert info.value.reason == "signature_stale"
    # Required for writes, not for reads; sent anyway on a read, it is checked.
    with pytest.raises(Unauthenticated) as info:
        await auth.check_signature("DELETE", "/api/v2/memory/m1", {}, b"")
    assert info.value.reason == "signature_missing"
    await auth.check_signature("GET", "/api/v2/memory/search?q=x", {}, b"")
    with pytest.raises(Unauthenticated):
        await auth.check_signature("GET", "/api/v2/memory/search?q=x", {"X-Memstream-Signature": "v1=00"}, b"")
    guard = ReplayGuard(ardis, 60)
    assert await guard.first_use("d" * 64 + tenant) and not await guard.first_use("d" * 64 + tenant)


# --- the authenticator end to end ---------------------------------------------------------


async def test_authenticator_schemes(stack: Stack, ardis: aioredis.Redis, tenant: str) -> None:
    on = stack.settings(jwt_hs256_secret=HS_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    auth = Authenticator.from_settings(on, ardis)
    key, _ = await auth.api_keys.create(tenant, frozenset({Role.READER}))
    assert (await auth.authenticate({"X-API-Key": key})).kind == "api_key"
    import jwt as pyjwt

    token = pyjwt.encode(claims(tenant), HS_SECRET, algorithm="HS256")
    assert (await auth.authenticate({"Authorization": f"Bearer {token}"})).tenant_id == tenant
    dev = await auth.authenticate({on.dev_tenant_header: tenant})  # stack settings enable it
    assert dev.kind == "dev" and dev.tenant_id == tenant
    off = Authenticator.from_settings(stack.settings(dev_tenant_header_enabled=False), ardis)
    with pytest.raises(Unauthenticated):
        await off.authenticate({on.dev_tenant_header: tenant})
    with pytest.raises(Unauthenticated) as info:
        await off.authenticate({"Authorization": f"Bearer {token}"})
    assert info.value.reason == "jwt_disabled"


# --- JWKS from a file and a loopback URL --------------------------------------------------

RSA = KeyPair("RSA", "rsa-live")


class JwksServer:
    def __init__(self, body: bytes, delay_s: float = 0.0) -> None:
        self.body, self.delay_s, self.hits = body, delay_s, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                time.sleep(outer.delay_s)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    srv = JwksServer(json.dumps({"keys": [RSA.jwk]}).encode())
    yield srv
    srv.close()


def jcfg() -> JwtConfig:
    return JwtConfig(algorithms=("RS256", "ES256"), issuer=ISSUER, audience=AUDIENCE)


async def test_jwks_url_cached_and_refreshed_for_new_kid(jwks_server: JwksServer) -> None:
    verifier = JwtVerifier(jcfg(), JwksProvider(url=jwks_server.url, timeout_s=2, cache_s=300, min_refresh_s=0))
    assert (await verifier.verify(RSA.sign(claims("acme")))).tenant_id == "acme"
    assert (await verifier.verify(RSA.sign(claims("acme")))).tenant_id == "acme"
    assert jwks_server.hits == 1
    # Key rotation: a token under a new kid triggers one refetch.
    new = KeyPair("EC", "ec-rotated")
    jwks_server.body = json.dumps({"keys": [RSA.jwk, new.jwk]}).encode()
    assert (await verifier.verify(new.sign(claims("acme")))).tenant_id == "acme"
    assert jwks_server.hits == 2


async def test_jwks_unknown_kid_refetch_is_bounded(jwks_server: JwksServer) -> None:
    verifier = JwtVerifier(jcfg(), JwksProvider(url=jwks_server.url, timeout_s=2, cache_s=300, min_refresh_s=60))
    await verifier.verify(RSA.sign(claims()))
    for i in range(5):
        with pytest.raises(Unauthenticated):
            await verifier.verify(RSA.sign(claims(), kid=f"forged-{i}"))
    assert jwks_server.hits == 1


async def test_jwks_url_timeout_and_down() -> None:
    slow = JwksServer(json.dumps({"keys": [RSA.jwk]}).encode(), delay_s=3)
    try:
        verifier = JwtVerifier(jcfg(), JwksProvider(url=slow.url, timeout_s=0.3))
        started = time.monotonic()
        with pytest.raises(AuthUnavailable):
            await verifier.verify(RSA.sign(claims()))
        assert time.monotonic() - started < 2
        # While the provider is failing, requests are refused at once, not after another timeout.
        started = time.monotonic()
        with pytest.raises(AuthUnavailable):
            await verifier.verify(RSA.sign(claims()))
        assert time.monotonic() - started < 0.2
    finally:
        slow.close()
