"""The Python SDK (clients/python) against the real stack: every call, sync and async, both
credentials, typed results, the contract's error codes, and retries on real 429 and 503 answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from memstream_client import (
    AsyncMemstreamClient,
    Conflict,
    Forbidden,
    MemstreamClient,
    MemstreamProducer,
    NotFound,
    RateLimited,
    Retry,
    RetryPolicy,
    TransportError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from memstream_client.models import BatchItemError, BatchItemOk

from app import devstack
from app.auth.principal import Role
from tests.support.gateway import Gateway, running
from tests.support.live_gateway import LiveGateway, live_gateway
from tests.support.stack import Stack

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.05, backoff_max_s=0.2)


@pytest.fixture(scope="module")
def live(stack: Stack, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    del gateway  # the session worker is ready once this fixture is
    with live_gateway(stack, tmp_path_factory.mktemp("sdk-gw")) as gw:
        yield gw


def test_sync_client_every_call(live: LiveGateway, tenant: str) -> None:
    key = asyncio.run(live.key(tenant, Role.WRITER))
    session = f"s-{uuid.uuid4().hex[:8]}"
    with MemstreamClient(live.url, api_key=key, retry=FAST) as c:
        assert c.health().status == "ok"
        assert c.ready().status in ("ok", "degraded")

        first = c.store(type="decision", key="db", text="Use Postgres for the ledger", session_id=session, wait=True)
        assert first.status == "visible" and first.memory_id
        got = c.retrieve(first.memory_id)
        assert got.source == "hotset" and got.record.text == "Use Postgres for the ledger"
        assert got.record.tenant_id == tenant and got.record.type == "decision"

        second = c.store(
            {"type": "decision", "key": "db", "content": {"text": "Use Snowflake for the ledger"}},
            session_id=session,
            wait=True,
        )
        hits = c.search("ledger", session_id=session)
        assert [h.memory_id for h in hits.results] == [second.memory_id]  # the replaced decision is left out
        with_old = c.search("ledger", session_id=session, include_superseded=True)
        assert {h.memory_id for h in with_old.results} == {first.memory_id, second.memory_id}

        batch = c.batch(
            [
                {"type": "event", "session_id": session, "content": {"text": "standup at ten"}},
                {"type": "task", "key": "release", "session_id": session, "content": {"text": "ship it"}},
                {"type": "event", "session_id": session, "content": {"text": "lunch at noon"}},
            ],
            wait=True,
        )
        assert (batch.accepted, batch.rejected) == (2, 1), batch.items
        bad = batch.items[1]
        assert isinstance(bad, BatchItemError) and bad.error["code"] == "validation_error"
        assert all(isinstance(i, BatchItemOk) and i.status == "visible" for i in (batch.items[0], batch.items[2]))

        ctx = c.context(session_id=session, budget_tokens=500)
        assert second.memory_id in {i.memory_id for i in ctx.items}
        assert first.memory_id not in {i.memory_id for i in ctx.items}
        assert "standup at ten" in ctx.as_prompt()

        sent = c.hand_off(to_agent="deployer", task="deploy release 42", from_agent="planner", wait=True)
        inbox = c.handoffs("deployer")
        assert [h.handoff_id for h in inbox.handoffs] == [sent.memory_id]
        assert inbox.handoffs[0].task == "deploy release 42" and not inbox.handoffs[0].acked
        ack = c.ack_handoff(sent.memory_id, agent_id="deployer", note="on it")
        assert ack.acked and ack.handoff_id == sent.memory_id
        with pytest.raises(Conflict) as again:
            c.ack_handoff(sent.memory_id, agent_id="deployer")
        assert again.value.code == "already_acked" and again.value.status == 409

        gone = c.forget(first.memory_id, wait=True)
        assert gone.memory_id == first.memory_id
        with pytest.raises(NotFound) as nf:
            c.retrieve(first.memory_id)
        assert nf.value.status == 404 and nf.value.code == "deleted"

        stats = c.stats()
        assert stats.tenant_id == tenant and stats.counts_by_type.get("decision") == 2

        with pytest.raises(ValidationFailed) as invalid:
            c.search("x", limit=1000)
        assert invalid.value.code == "validation_error" and invalid.value.details


async def test_async_client_every_call_with_a_jwt(live: LiveGateway, tenant: str) -> None:
    token = live.token(tenant, "writer")
    session = f"s-{uuid.uuid4().hex[:8]}"
    async with AsyncMemstreamClient(live.url, bearer_token=token, retry=FAST) as c:
        assert (await c.health()).status == "ok"
        assert (await c.ready()).checks["redis"].status == "up"
        stored = await c.store(type="rule", key="tone", text="answer briefly", session_id=session, wait=True)
        assert stored.status == "visible"
        assert (await c.retrieve(stored.memory_id, memory_type="rule")).record.key == "tone"
        with pytest.raises(NotFound):
            await c.retrieve(stored.memory_id, memory_type="decision")
        assert (await c.search("briefly")).results[0].memory_id == stored.memory_id
        batch = await c.batch([{"type": "event", "session_id": session, "content": {"text": "hello there"}}], wait=True)
        assert batch.accepted == 1
        ctx = await c.context(session_id=session)
        assert {i.section for i in ctx.items} >= {"rules", "recent"}
        sent = await c.hand_off({"to_agent": "reviewer", "task": "review the PR"}, wait=True)
        assert [h.handoff_id for h in (await c.handoffs("reviewer")).handoffs] == [sent.memory_id]
        assert (await c.ack_handoff(sent.memory_id, agent_id="reviewer")).acked
        assert (await c.handoffs("reviewer")).handoffs == []
        assert [h.acked for h in (await c.handoffs("reviewer", include_acked=True)).handoffs] == [True]
        await c.forget(stored.memory_id, wait=True)
        with pytest.raises(NotFound):
            await c.retrieve(stored.memory_id)
        assert (await c.stats()).counts_by_type["rule"] == 1


def test_sync_subscribe_follows_and_resumes(live: LiveGateway, tenant: str) -> None:
    key = asyncio.run(live.key(tenant, Role.WRITER))
    with MemstreamClient(live.url, api_key=key, retry=FAST) as c:
        one = c.store(type="event", text="first change", wait=True)
        feed = c.subscribe(last_event_id="0-0")  # from the feed's start
        first = next(feed)
        assert (first.event, first.memory_id) == ("created", one.memory_id)
        assert first.record is not None and first.record["content"]["text"] == "first change"
        two = c.store(type="event", text="second change", wait=True)
        second = next(feed)
        assert (second.event, second.memory_id) == ("created", two.memory_id)
        feed.close()
        # A new subscription after the first event resumes with exactly what followed it.
        resumed = c.subscribe(last_event_id=first.id)
        assert next(resumed).memory_id == two.memory_id
        resumed.close()
        with pytest.raises(ValidationFailed):
            next(c.subscribe(channel_visibility="everyone"))


async def test_async_subscribe_filters(live: LiveGateway, tenant: str) -> None:
    async with AsyncMemstreamClient(live.url, bearer_token=live.token(tenant, "writer"), retry=FAST) as c:
        await c.store(type="event", text="a private note", wait=True)
        public = await c.store(
            type="event", text="a public note", channel={"id": "news", "visibility": "public"}, wait=True
        )
        feed = c.subscribe(channel_visibility="public", last_event_id="0-0")
        event = await anext(feed)
        assert (event.event, event.memory_id, event.data["visibility"]) == ("created", public.memory_id, "public")
        await feed.aclose()


async def test_refusals_carry_the_contract_codes(live: LiveGateway, tenant: str) -> None:
    reader = await live.key(tenant, Role.READER)
    writer = await live.key(tenant, Role.WRITER)
    other = await live.key(f"{tenant}-other", Role.WRITER)
    async with (
        AsyncMemstreamClient(live.url, api_key=reader) as r,
        AsyncMemstreamClient(live.url, api_key=writer) as w,
        AsyncMemstreamClient(live.url, api_key=other) as o,
        AsyncMemstreamClient(live.url, api_key="msk_0000000000000000_" + "A" * 43) as bad,
    ):
        with pytest.raises(Forbidden) as refused:
            await r.store(type="event", text="x")
        assert refused.value.code == "forbidden" and refused.value.details == {"reason": "role"}
        mine = await w.store(type="event", text="only for my tenant", wait=True)
        assert (await r.retrieve(mine.memory_id)).record.memory_id == mine.memory_id
        with pytest.raises(NotFound):
            await o.retrieve(mine.memory_id)
        with pytest.raises(Unauthorized) as unauth:
            await bad.stats()
        assert unauth.value.status == 401


async def test_a_real_429_is_retried_after_retry_after(stack: Stack, tenant: str) -> None:
    settings = stack.settings(rate_limit_per_key_per_minute=60, dev_tenant_header_enabled=False)
    async with running(settings) as gw:
        key, _ = await gw.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.READER}))
        transport = httpx.ASGITransport(app=gw.app)
        for _ in range(200):  # spend the whole bucket
            r = await gw.client.get("/api/v2/memory/stats", headers={"X-API-Key": key})
            if r.status_code == 429:
                break
        retries: list[Retry] = []
        async with AsyncMemstreamClient(
            "http://gateway", api_key=key, transport=transport, retry=RetryPolicy(max_retries=0)
        ) as once:
            with pytest.raises(RateLimited) as limited:
                await once.stats()
        assert limited.value.code == "rate_limited" and limited.value.retry_after is not None
        assert 1 <= limited.value.retry_after <= 2
        async with AsyncMemstreamClient(
            "http://gateway", api_key=key, transport=transport, on_retry=retries.append
        ) as patient:
            started = time.monotonic()
            assert (await patient.stats()).tenant_id == tenant
        assert retries and retries[0].reason == "429 rate_limited"
        assert time.monotonic() - started >= retries[0].delay >= 1  # waited as told


class _Flaky(BaseHTTPRequestHandler):
    """503 with Retry-After for the first `failures` requests, then a health answer."""

    failures = 2
    retry_after = "1"
    seen: list[float]

    def do_GET(self) -> None:
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.failures:
            body = {"error": {"code": "not_ready", "message": "warming up", "details": None}}
            self._send(503, body, {"Retry-After": self.retry_after})
        else:
            self._send(200, {"status": "ok"}, {})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[float], type[_Flaky]]]:
    seen: list[float] = []
    handler = type("Flaky", (_Flaky,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, handler
    server.shutdown()
    server.server_close()


def test_503_with_retry_after_is_honoured_sync(flaky: tuple[str, list[float], type[_Flaky]]) -> None:
    url, seen, _ = flaky
    retries: list[Retry] = []
    with MemstreamClient(url, on_retry=retries.append) as c:
        assert c.health().status == "ok"
    assert len(seen) == 3 and [r.reason for r in retries] == ["503 not_ready", "503 not_ready"]
    assert all(b - a >= 1 for a, b in itertools.pairwise(seen))


async def test_503_with_retry_after_is_honoured_async(flaky: tuple[str, list[float], type[_Flaky]]) -> None:
    url, seen, _ = flaky
    async with AsyncMemstreamClient(url) as c:
        assert (await c.health()).status == "ok"
    assert len(seen) == 3 and seen[2] - seen[0] >= 2


def test_retries_are_bounded(flaky: tuple[str, list[float], type[_Flaky]]) -> None:
    url, seen, handler = flaky
    handler.failures = 100
    with MemstreamClient(url, retry=RetryPolicy(max_retries=1)) as c, pytest.raises(Unavailable) as out:
        c.health()
    assert out.value.code == "not_ready" and len(seen) == 2
    handler.retry_after = "3600"  # longer than anyone should wait inside a call
    with MemstreamClient(url) as c, pytest.raises(Unavailable):
        c.health()
    assert len(seen) == 3


def test_connection_errors_are_retried_only_for_idempotent_calls() -> None:
    url = f"http://127.0.0.1:{devstack.free_port()}"  # nothing listens there
    retries: list[Retry] = []
    with MemstreamClient(url, retry=FAST, on_retry=retries.append) as c:
        with pytest.raises(TransportError):
            c.search("anything")
        assert len(retries) == 3 and retries[0].reason == "ConnectError"
        retries.clear()
        with pytest.raises(TransportError):
            c.store(type="event", text="x")  # carries its event id: a resend is the same write
        assert len(retries) == 3
        retries.clear()
        with pytest.raises(TransportError):
            c.ack_handoff("h-1")  # an applied ack whose answer was lost would be a 409 on resend
        assert retries == []


async def test_producer_events_are_processed_like_any_other(gateway: Gateway, tenant: str) -> None:
    settings = gateway.settings
    reports = []
    session = f"s-{uuid.uuid4().hex[:8]}"
    with MemstreamProducer(
        settings.kafka_bootstrap, topic=settings.topic_events, on_delivery=reports.append
    ) as producer:
        sent = [
            producer.send(
                {
                    "tenant_id": tenant,
                    "type": "event",
                    "session_id": session,
                    "memory_id": f"m-prod-{i}",
                    "content": {"text": f"produced message {i}"},
                }
            )
            for i in range(200)
        ]
    assert len(reports) == 200 and all(r.ok and r.offset is not None for r in reports)
    assert {r.event_id for r in reports} == {e.event_id for e in sent}
    async with AsyncMemstreamClient("http://gateway", transport=httpx.ASGITransport(app=gateway.app),
                                    headers=gateway.headers(tenant)) as c:  # fmt: skip

        async def all_visible() -> bool:
            try:
                await asyncio.gather(*(c.retrieve(f"m-prod-{i}") for i in range(0, 200, 20)))
            except NotFound:
                return False
            return True

        deadline = time.monotonic() + 60
        while not await all_visible():
            assert time.monotonic() < deadline, "produced events did not become visible"
            await asyncio.sleep(0.1)
        got = await c.retrieve("m-prod-7")
        assert got.record.text == "produced message 7" and got.record.session_id == session
        assert (await c.search("produced", session_id=session, limit=5)).results


async def test_signed_writes_pass_a_gateway_that_requires_signatures(
    stack: Stack, gateway: Gateway, tenant: str
) -> None:
    del gateway  # the worker is ready: wait=visible returns
    secret = "sdk-signing-secret-0123456789"
    settings = stack.settings(request_signing_secret=secret, request_signing_required=True)
    async with running(settings) as gw:
        key, _ = await gw.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.WRITER}))
        transport = httpx.ASGITransport(app=gw.app)
        async with AsyncMemstreamClient(
            "http://gateway", api_key=key, transport=transport, signing_secret=secret
        ) as signed:
            first = await signed.store(type="event", text="a signed write", wait=True)
            await signed.store(type="event", text="another signed write")  # same second, another signature
            assert (await signed.retrieve(first.memory_id)).record.text == "a signed write"
            await signed.forget(first.memory_id, wait=True)
        async with AsyncMemstreamClient("http://gateway", api_key=key, transport=transport) as unsigned:
            with pytest.raises(Unauthorized) as refused:
                await unsigned.store(type="event", text="x")
            assert refused.value.details == {"reason": "signature_missing"}


def test_the_sdk_does_not_import_the_server() -> None:
    code = (
        "import sys, memstream_client, memstream_client.producer;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'app','agents','sinks','topics','fastapi','redis'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
