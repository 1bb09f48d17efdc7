"""Security of the gateway end to end (real Tansu, worker, Redis, warehouse emulator): every
(role, endpoint) pair, cross-tenant attempts, JWT attacks, revocation, shared rate limits,
audit entries on memory.audit and in AUDIT_LOGS, HTTPS serving."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from app import devstack
from app.auth.endpoints import ROUTE_ACTIONS
from app.auth.principal import Role
from app.auth.rbac import PERMISSIONS
from app.settings import Settings
from app.snowflake_conn import connect
from tests.support.auth import AUDIENCE, HS_SECRET, ISSUER, KeyPair, claims, raw_token, self_signed
from tests.support.gateway import Gateway, running
from tests.support.kafka import read_topic
from tests.support.stack import Proc, Stack, wait_until

API = "/api/v2"
RSA = KeyPair("RSA", "gw-rsa")
EC = KeyPair("EC", "gw-ec")


def secure_settings(stack: Stack, tmp: Path, **over: Any) -> Settings:
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [RSA.jwk, EC.jwk]}))
    values: dict[str, Any] = {
        "dev_tenant_header_enabled": False,
        "jwt_hs256_secret": HS_SECRET,
        "jwt_jwks_file": str(jwks),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "api_key_pepper": "gateway-test-pepper",
    }
    values.update(over)
    return stack.settings(**values)


class Client:
    """A gateway client holding one credential."""

    def __init__(self, gw: Gateway, headers: dict[str, str]) -> None:
        self.gw, self.headers = gw, headers

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.gw.client.request(method, path, headers=headers, **kw)


async def key_client(gw: Gateway, tenant: str, *roles: Role, agent: str | None = None) -> Client:
    key, _ = await gw.app.state.security.authenticator.api_keys.create(tenant, frozenset(roles), agent)
    return Client(gw, {"X-API-Key": key})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def secure(
    stack: Stack, worker: Proc, warehouse_table: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    del worker, warehouse_table  # erasure and export read the warehouse table
    async with running(secure_settings(stack, tmp_path_factory.mktemp("jwks"))) as gw:
        yield gw


EVENT = {"type": "event", "content": {"text": "x"}}
OTHER_AGENT_EVENT = {"type": "event", "agent_id": "other", "content": {"text": "x"}}


# One request per endpoint, well formed, so that an allowed call never fails for another reason.
def calls(uid: str) -> dict[tuple[str, str], tuple[str, str, dict[str, Any]]]:
    m, h = f"{API}/memory", f"{API}/handoffs"
    subject = {"subject_type": "user_id", "subject_id": f"none-{uid}"}
    return {
        ("POST", f"{m}/store"): ("POST", f"{m}/store", {"json": EVENT}),
        ("POST", f"{m}/batch"): ("POST", f"{m}/batch", {"json": {"items": [EVENT]}}),
        ("GET", f"{m}/retrieve"): ("GET", f"{m}/retrieve", {"params": {"memory_id": f"none-{uid}"}}),
        ("GET", f"{m}/search"): ("GET", f"{m}/search", {"params": {"q": "x"}}),
        ("GET", f"{m}/stats"): ("GET", f"{m}/stats", {}),
        ("DELETE", f"{m}/{{memory_id}}"): ("DELETE", f"{m}/none-{uid}", {}),
        ("GET", f"{API}/context"): ("GET", f"{API}/context", {"params": {"session_id": "s"}}),
        ("POST", h): ("POST", h, {"json": {"to_agent": "bob", "task": "t"}}),
        ("GET", h): ("GET", h, {"params": {"to_agent": "bob"}}),
        ("POST", f"{h}/{{handoff_id}}/ack"): ("POST", f"{h}/none-{uid}/ack", {}),
        ("POST", f"{API}/admin/erasure"): ("POST", f"{API}/admin/erasure", {"json": subject}),
        ("POST", f"{API}/admin/export"): ("POST", f"{API}/admin/export", {"json": subject}),
    }


def test_every_api_route_has_a_permission(secure: Gateway) -> None:
    api = {
        (method.upper(), path)
        for path, item in secure.app.openapi()["paths"].items()
        if path.startswith(API)
        for method in item
    }
    assert api == set(ROUTE_ACTIONS) == set(calls("x"))


@pytest.mark.parametrize("role", list(Role))
async def test_role_endpoint_matrix(secure: Gateway, tenant: str, role: Role) -> None:
    client = await key_client(secure, tenant, role)
    for route, (method, path, kw) in calls(uuid.uuid4().hex[:8]).items():
        action = ROUTE_ACTIONS[route]
        r = await client.request(method, path, **kw)
        if role in PERMISSIONS[action]:
            assert r.status_code not in (401, 403), (role, route, r.text)
            assert r.status_code in (200, 202, 404), (role, route, r.text)
        else:
            assert r.status_code == 403, (role, route, r.text)
            assert r.json()["error"]["code"] == "forbidden"


async def test_no_credential_no_role_no_access(secure: Gateway, tenant: str) -> None:
    no_roles = Client(secure, bearer(jwt.encode(claims(tenant, roles=[]), HS_SECRET, algorithm="HS256")))
    anonymous = Client(secure, {})
    dev = Client(secure, {secure.settings.dev_tenant_header: tenant})
    for method, path, kw in calls("x").values():
        assert (await no_roles.request(method, path, **kw)).status_code == 403
        r = await anonymous.request(method, path, **kw)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await dev.request(method, path, **kw)
        assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "dev_header_disabled"}
    # Public endpoints stay public.
    assert (await anonymous.request("GET", "/health")).status_code == 200


async def test_jwt_schemes_and_attacks_through_the_gateway(secure: Gateway, tenant: str) -> None:
    path = f"{API}/memory/stats"
    for token in (
        RSA.sign(claims(tenant, roles=["reader"])),
        EC.sign(claims(tenant, roles=["reader"])),
        jwt.encode(claims(tenant, roles=["reader"]), HS_SECRET, algorithm="HS256"),
    ):
        r = await secure.client.get(path, headers=bearer(token))
        assert r.status_code == 200 and r.json()["tenant_id"] == tenant, r.text
    now = int(time.time())
    attacks = {
        "alg none": raw_token({"alg": "none"}, claims(tenant, roles=["admin"]), None),
        "expired": RSA.sign(claims(tenant, exp=now - 600, iat=now - 900, nbf=now - 900)),
        "not yet valid": RSA.sign(claims(tenant, nbf=now + 600)),
        "wrong audience": RSA.sign(claims(tenant, aud="other-service")),
        "wrong issuer": RSA.sign(claims(tenant, iss="https://evil.test")),
        "tampered": RSA.sign(claims(tenant))[:-6] + "AAAAAA",
        "HS256 with the RSA public key": raw_token({"alg": "HS256", "kid": RSA.kid}, claims(tenant), RSA.public_pem),
        "unknown kid": RSA.sign(claims(tenant), kid="nope"),
    }
    for name, token in attacks.items():
        r = await secure.client.get(path, headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "unauthorized"


async def test_revoked_and_expired_keys_refused_at_once(secure: Gateway, tenant: str) -> None:
    store = secure.app.state.security.authenticator.api_keys
    key, rec = await store.create(tenant, frozenset({Role.READER}))
    short, _ = await store.create(tenant, frozenset({Role.READER}), expires_in_s=1)
    path = f"{API}/memory/stats"
    assert (await secure.client.get(path, headers={"X-API-Key": key})).status_code == 200
    assert (await secure.client.get(path, headers={"X-API-Key": short})).status_code == 200
    await store.revoke(rec.prefix)
    r = await secure.client.get(path, headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "key_revoked"}
    await asyncio.sleep(1.05)
    r = await secure.client.get(path, headers={"X-API-Key": short})
    assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "key_expired"}


async def test_cross_tenant_attempts_fail_and_leak_nothing(secure: Gateway, tenant: str) -> None:
    owner = await key_client(secure, tenant, Role.WRITER)
    intruder_tenant = f"{tenant}-x"
    intruder = await key_client(secure, intruder_tenant, Role.ADMIN)
    secret = f"alpha-{uuid.uuid4().hex[:8]}"
    r = await owner.request(
        "POST", f"{API}/memory/store", params={"wait": "visible"},
        json={"type": "event", "session_id": "s1", "agent_id": "a1", "content": {"text": f"{secret} plans"}},
    )  # fmt: skip
    assert r.status_code == 202 and r.json()["status"] == "visible", r.text
    memory_id = r.json()["memory_id"]
    r = await owner.request(
        "POST",
        f"{API}/handoffs",
        params={"wait": "visible"},
        json={"to_agent": "bob", "task": f"{secret} task"},
    )
    assert r.status_code == 202, r.text
    handoff_id = r.json()["memory_id"]

    # By id: indistinguishable from an id that exists nowhere.
    missing = await intruder.request("GET", f"{API}/memory/retrieve", params={"memory_id": f"nope-{secret}"})
    theirs = await intruder.request("GET", f"{API}/memory/retrieve", params={"memory_id": memory_id})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    assert secret not in theirs.text
    typed = await intruder.request(
        "GET", f"{API}/memory/retrieve", params={"memory_id": memory_id, "memory_type": "event"}
    )
    assert typed.status_code == 404
    # Search, context, handoff lists: nothing of the owner's.
    for method, path, params in [
        ("GET", f"{API}/memory/search", {"q": secret}),
        ("GET", f"{API}/context", {"session_id": "s1", "agent_id": "a1"}),
        ("GET", f"{API}/handoffs", {"to_agent": "bob", "include_acked": "true"}),
        ("GET", f"{API}/memory/stats", {}),
    ]:
        r = await intruder.request(method, path, params=params)
        assert r.status_code == 200, r.text
        # (search echoes the caller's own query: compare everything but that echo)
        seen = json.dumps({k: v for k, v in r.json().items() if k not in ("query", "terms")})
        assert secret not in seen and memory_id not in seen and handoff_id not in seen
    assert (await intruder.request("GET", f"{API}/memory/search", params={"q": secret})).json()["results"] == []
    # Acknowledge or delete the owner's ids: 404 / a no-op in the intruder's own namespace.
    assert (await intruder.request("POST", f"{API}/handoffs/{handoff_id}/ack")).status_code == 404
    r = await intruder.request("DELETE", f"{API}/memory/{memory_id}", params={"wait": "visible"})
    assert r.status_code == 202
    # A body naming the owner's tenant is refused; the dev header cannot pick a tenant either.
    r = await intruder.request(
        "POST", f"{API}/memory/store", json={"tenant_id": tenant, "type": "event", "content": {"text": "x"}}
    )
    assert r.status_code == 403
    r = await intruder.request(
        "GET",
        f"{API}/memory/search",
        params={"q": secret},
        headers={secure.settings.dev_tenant_header: tenant},
    )
    assert r.json()["results"] == []
    # The owner still has everything.
    r = await owner.request("GET", f"{API}/memory/retrieve", params={"memory_id": memory_id})
    assert r.status_code == 200 and secret in r.json()["record"]["content"]["text"]
    r = await owner.request("GET", f"{API}/handoffs", params={"to_agent": "bob"})
    assert [h["handoff_id"] for h in r.json()["handoffs"]] == [handoff_id]


async def test_agent_scoped_key(secure: Gateway, tenant: str) -> None:
    planner = await key_client(secure, tenant, Role.WRITER, agent="planner")
    r = await planner.request(
        "POST",
        f"{API}/memory/store",
        params={"wait": "visible"},
        json={"type": "event", "content": {"text": "mine"}},
    )
    assert r.status_code == 202, r.text
    doc = await planner.request("GET", f"{API}/memory/retrieve", params={"memory_id": r.json()["memory_id"]})
    assert doc.json()["record"]["agent_id"] == "planner"
    refused = [
        ("POST", f"{API}/memory/store", {"json": OTHER_AGENT_EVENT}),
        ("POST", f"{API}/memory/batch", {"json": {"items": [OTHER_AGENT_EVENT]}}),
        ("POST", f"{API}/handoffs", {"json": {"to_agent": "bob", "task": "t", "from_agent": "other"}}),
        ("GET", f"{API}/handoffs", {"params": {"to_agent": "other"}}),
        ("GET", f"{API}/context", {"params": {"agent_id": "other"}}),
        ("POST", f"{API}/handoffs/h1/ack", {"json": {"agent_id": "other"}}),
    ]  # fmt: skip
    for method, path, kw in refused:
        r = await planner.request(method, path, **kw)
        assert r.status_code == 403 and r.json()["error"]["details"] == {"reason": "agent_scope"}, (
            path,
            r.text,
        )
    assert (await planner.request("GET", f"{API}/handoffs", params={"to_agent": "planner"})).status_code == 200


async def test_two_gateways_share_one_rate_limit(stack: Stack, tmp_path: Path, tenant: str) -> None:
    settings = secure_settings(stack, tmp_path, rate_limit_per_key_per_minute=3)
    async with running(settings) as one, running(settings) as two:
        key, _ = await one.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.READER}))
        codes = []
        for i in range(5):
            gw = one if i % 2 == 0 else two
            r = await gw.client.get(f"{API}/memory/stats", headers={"X-API-Key": key})
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429, 429]
        assert 1 <= int(r.headers["retry-after"]) <= 20
        assert r.json()["error"]["code"] == "rate_limited"


async def test_reads_and_writes_are_audited_without_content(secure: Gateway, tenant: str) -> None:
    client = await key_client(secure, tenant, Role.WRITER)
    secret = f"audit-secret-{uuid.uuid4().hex[:8]}"
    rid = uuid.uuid4().hex[:16]
    w = await client.request(
        "POST", f"{API}/memory/store", params={"wait": "visible"},
        json={"type": "event", "content": {"text": secret}}, headers={"X-Request-ID": f"{rid}-w"},
    )  # fmt: skip
    memory_id = w.json()["memory_id"]
    assert w.headers["x-request-id"] == f"{rid}-w"
    await client.request(
        "GET", f"{API}/memory/retrieve", params={"memory_id": memory_id}, headers={"X-Request-ID": f"{rid}-r"}
    )
    await client.request("GET", f"{API}/memory/search", params={"q": secret}, headers={"X-Request-ID": f"{rid}-s"})
    await client.request("DELETE", f"{API}/memory/{memory_id}", headers={"X-Request-ID": f"{rid}-d"})
    await secure.app.state.security.audit.flush()

    def ours() -> list[dict[str, Any]]:
        rows = [orjson.loads(v) for _, v in read_topic(secure.settings, secure.settings.topic_audit)]
        return [e for e in rows if str(e.get("request_id", "")).startswith(rid)]

    entries = wait_until(lambda: (lambda es: es if len(es) == 4 else None)(ours()), timeout_s=30)
    by = {e["request_id"][-1]: e for e in entries}
    assert (by["w"]["action"], by["w"]["status_code"], by["w"]["resource_ids"]) == (
        "memory.write",
        202,
        [memory_id],
    )
    assert (by["r"]["action"], by["r"]["resource_ids"]) == ("memory.read", [memory_id])
    assert (by["s"]["action"], by["s"]["resource_ids"]) == ("memory.search", [memory_id])
    assert (by["d"]["action"], by["d"]["resource_ids"]) == ("memory.delete", [memory_id])
    assert all(e["tenant_id"] == tenant and e["principal"].startswith("key:") and e["success"] for e in entries)
    assert secret not in json.dumps(entries)

    # ... and on into the warehouse through the worker's sink.
    def rows() -> list[tuple[Any, ...]]:
        conn = connect(secure.settings)
        try:
            cur = conn.cursor()
            cur.execute(
                "SELECT request_id, action, tenant_id, success, resource_ids, details FROM AUDIT_LOGS "
                "WHERE tenant_id = %s",
                (tenant,),
            )
            return [r for r in cur.fetchall() if str(r[0]).startswith(rid)]
        finally:
            conn.close()

    found = wait_until(lambda: (lambda rs: rs if len(rs) == 4 else None)(rows()), timeout_s=60, interval_s=0.5)
    assert {r[1] for r in found} == {"memory.write", "memory.read", "memory.search", "memory.delete"}
    assert secret not in repr(found)


async def test_https_gateway_command(stack: Stack, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = devstack.free_port()
    env = {**stack.env, "MEMSTREAM_GATEWAY_PORT": str(port), "MEMSTREAM_GATEWAY_HOST": "127.0.0.1"}
    proc = Proc(["gateway", "--cert", str(cert), "--key", str(key)], env, tmp_path / "gateway.log").start()
    try:
        devstack.wait_for_port(port, 60, proc.proc)
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trust, timeout=10) as client:
            r = await client.get(f"https://127.0.0.1:{port}/health")
            assert r.status_code == 200
            r = await client.get(
                f"https://127.0.0.1:{port}/api/v2/memory/stats",
                headers={stack.settings().dev_tenant_header: "tls"},
            )
            assert r.status_code == 200, r.text
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as plain:
                await plain.get(f"http://127.0.0.1:{port}/health")
    finally:
        proc.stop()
