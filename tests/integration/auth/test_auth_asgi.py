"""The FastAPI glue on a small app of its own (real Redis): dependency, errors, audit middleware."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI

from app.auth.apikeys import ApiKeyStore
from app.auth.asgi import AuditMiddleware, Security, current_principal, install
from app.auth.audit import AuditSink
from app.auth.principal import Principal, Role
from app.auth.rbac import Action
from app.auth.signing import sign_request
from tests.support.stack import Stack


class ListProducer:
    """Collects what the audit sink publishes (the Kafka path is tested with the gateway)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, bytes]] = []

    async def send_many(self, messages: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
        self.messages.extend(messages)
        return []


Caller = Annotated[Principal, Depends(current_principal)]


def build(security: Security) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{memory_id}")
    async def read(memory_id: str, caller: Caller) -> dict[str, Any]:
        return {"memory_id": memory_id, "tenant": caller.tenant_id, "text": "very private content"}

    @app.get("/search")
    async def search(caller: Caller, q: str) -> dict[str, Any]:
        return {"results": [{"memory_id": "m1", "record": {"text": q}}, {"memory_id": "m2"}]}

    @app.post("/items")
    async def write(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        return {"memory_id": "m-new"}

    @app.get("/unmapped")
    async def unmapped(caller: Caller) -> dict[str, Any]:
        return {}

    install(app)
    app.add_middleware(AuditMiddleware)
    app.state.security = security
    return app


ROUTES = {
    ("GET", "/items/{memory_id}"): Action.MEMORY_READ,
    ("GET", "/search"): Action.MEMORY_SEARCH,
    ("POST", "/items"): Action.MEMORY_WRITE,
}


@pytest.fixture
async def ardis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    yield client
    await client.aclose()


async def wait_for(producer: ListProducer, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(producer.messages) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return [orjson.loads(m[2]) for m in producer.messages]


async def test_dependency_errors_and_audit(stack: Stack, ardis: aioredis.Redis, tenant: str) -> None:
    producer = ListProducer()
    settings = stack.settings(rate_limit_per_key_per_minute=4, dev_tenant_header_enabled=False)
    sink = AuditSink(producer, settings.topic_audit)
    app = build(Security(settings, ardis, ROUTES, sink))
    store = ApiKeyStore(ardis)
    reader, reader_rec = await store.create(tenant, frozenset({Role.READER}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/items/m1")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == {
            "code": "unauthorized",
            "message": "credentials required (Authorization: Bearer or X-API-Key)",
            "details": {"reason": "missing"},
        }
        assert len(r.headers["x-request-id"]) == 32

        h = {"X-API-Key": reader, "X-Request-ID": "req-1"}
        r = await client.get("/items/m1", headers=h)
        assert r.status_code == 200 and r.json()["tenant"] == tenant and r.headers["x-request-id"] == "req-1"
        r = await client.get("/search", params={"q": "secret words"}, headers=h)
        assert r.status_code == 200
        r = await client.post("/items", json={"text": "x"}, headers=h)
        assert r.status_code == 403 and r.json()["error"]["details"] == {"reason": "role"}
        r = await client.get("/unmapped", headers=h)
        assert r.status_code == 403 and r.json()["error"]["details"] is None
        r = await client.get("/items/m2", headers=h)
        assert r.status_code == 200
        # The 5th counted request (an unmapped route is refused before counting).
        r = await client.get("/items/m3", headers=h)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 15
        assert r.json()["error"]["code"] == "rate_limited"

    entries = await wait_for(producer, 5)
    await sink.close()
    assert all(m[0] == settings.topic_audit and m[1] == tenant.encode() for m in producer.messages)
    got = [(e["action"], e["status_code"], e["success"], e["resource_ids"]) for e in entries]
    assert got == [
        ("memory.read", 200, True, ["m1"]),
        ("memory.search", 200, True, ["m1", "m2"]),
        ("memory.write", 403, False, []),
        ("memory.read", 200, True, ["m2"]),
        ("memory.read", 429, False, ["m3"]),
    ]
    first = entries[0]
    assert first["principal"] == f"key:{reader_rec.prefix}" and first["request_id"] == "req-1"
    assert first["details"] == {"route": "/items/{memory_id}", "method": "GET", "kind": "api_key"}
    raw = b"".join(m[2] for m in producer.messages)
    assert b"private content" not in raw and b"secret" not in raw and reader.encode() not in raw


async def test_signed_writes(stack: Stack, ardis: aioredis.Redis, tenant: str) -> None:
    settings = stack.settings(request_signing_secret="k" * 32, request_signing_required=True)
    app = build(Security(settings, ardis, ROUTES))
    writer, _ = await ApiKeyStore(ardis).create(tenant, frozenset({Role.WRITER}))
    body = b'{"text": "hello"}'
    ts = str(int(time.time()))
    sig = sign_request(b"k" * 32, "POST", "/items?wait=visible", ts, body)
    h = {"X-API-Key": writer, "Content-Type": "application/json"}
    signed = {**h, "X-Memstream-Timestamp": ts, "X-Memstream-Signature": sig}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/items?wait=visible", content=body, headers=h)
        assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "signature_missing"}
        r = await client.post("/items?wait=visible", content=body, headers=signed)
        assert r.status_code == 200, r.text
        r = await client.post("/items?wait=visible", content=body, headers=signed)
        assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "signature_replay"}
        r = await client.post("/items", content=body, headers=signed)  # signed for another target
        assert r.status_code == 401 and r.json()["error"]["details"] == {"reason": "signature_mismatch"}
