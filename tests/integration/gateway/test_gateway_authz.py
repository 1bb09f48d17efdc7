"""Authorization inside a tenant, bad input at the door and tenant-only figures, end to end
(real Tansu, worker, Redis, warehouse emulator, real API keys): both read paths — the hot-read
ASGI handler and the FastAPI routes (MEMSTREAM_GATEWAY_FAST_READS off) — apply one rule."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.auth.principal import Role
from app.gateway.search import SearchParams
from app.models import MAX_JSON_DEPTH
from app.settings import Settings
from tests.support.gateway import Gateway, insert_row, running
from tests.support.kafka import event, publish
from tests.support.stack import Stack

API = "/api/v2"


def authz_settings(stack: Stack, **over: Any) -> Settings:
    return stack.settings(dev_tenant_header_enabled=False, api_key_pepper="authz-test-pepper", **over)


@pytest.fixture(scope="module", params=[True, False], ids=["hot-reads", "fastapi-routes"])
async def gw(request: pytest.FixtureRequest, stack: Stack, gateway: Gateway) -> AsyncIterator[Gateway]:
    del gateway  # the session gateway waits until the worker processes writes
    async with running(authz_settings(stack, gateway_fast_reads=request.param)) as g:
        yield g


async def key(gw: Gateway, tenant: str, *roles: Role, agent: str | None = None) -> dict[str, str]:
    k, _ = await gw.app.state.security.authenticator.api_keys.create(tenant, frozenset(roles), agent)
    return {"X-API-Key": k}


async def store(gw: Gateway, headers: dict[str, str], body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    r = await gw.client.post(f"{API}/memory/store", json=body, headers=headers, params={"wait": "visible"})
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


def text(word: str, what: str) -> dict[str, Any]:
    return {"text": f"{word} {what}"}


async def test_scoped_key_cannot_change_another_agents_memory(gw: Gateway, tenant: str) -> None:
    admin = await key(gw, tenant, Role.WRITER)  # unscoped: tenant-wide
    planner = await key(gw, tenant, Role.WRITER, agent="planner")
    coders = f"m-coder-{uuid.uuid4().hex[:8]}"
    shared = f"m-shared-{uuid.uuid4().hex[:8]}"
    await store(gw, admin, {"memory_id": coders, "type": "event", "agent_id": "coder", "content": text("x", "c")})
    await store(gw, admin, {"memory_id": shared, "type": "rule", "key": "k", "content": text("x", "rule")})
    handoff = await gw.client.post(
        f"{API}/handoffs",
        json={"to_agent": "reviewer", "from_agent": "coder", "task": "review"},
        headers=admin,
        params={"wait": "visible"},
    )
    assert handoff.status_code == 202, handoff.text
    hid = handoff.json()["memory_id"]

    # Store onto another agent's memory, a handoff it neither sent nor received, an unscoped one.
    for mid, code in ((coders, 404), (hid, 404), (shared, 403)):
        body = {"memory_id": mid, "type": "handoff", "content": {"text": "t", "to_agent": "planner", "task": "t"}}
        r = await gw.client.post(f"{API}/memory/store", json=body, headers=planner)
        assert r.status_code == code, (mid, r.text)
        d = await gw.client.delete(f"{API}/memory/{mid}", headers=planner)
        assert d.status_code == code, (mid, d.text)
    batch = await gw.client.post(
        f"{API}/memory/batch",
        json={
            "items": [
                {"memory_id": coders, "type": "event", "content": text("x", "b")},
                {"type": "event", "content": text("x", "ok")},
            ]
        },
        headers=planner,
    )
    assert batch.status_code == 202 and [i["status"] for i in batch.json()["items"]] == [404, "accepted"], batch.text
    # Nothing changed: the handoff is still open in the recipient's inbox, the memory still there.
    inbox = await gw.client.get(f"{API}/handoffs", params={"to_agent": "reviewer"}, headers=admin)
    assert [h["handoff_id"] for h in inbox.json()["handoffs"]] == [hid]
    kept = await gw.client.get(f"{API}/memory/retrieve", params={"memory_id": coders}, headers=admin)
    assert kept.status_code == 200 and kept.json()["record"]["content"]["text"] == "x c"

    # Its own memories it rewrites and deletes.
    mine = f"m-planner-{uuid.uuid4().hex[:8]}"
    await store(gw, planner, {"memory_id": mine, "type": "event", "content": text("x", "v1")})
    await store(gw, planner, {"memory_id": mine, "type": "event", "content": text("x", "v2")})
    assert (await gw.client.delete(f"{API}/memory/{mine}", headers=planner)).status_code == 202
    # The sender rewrites its own handoff; the recipient acknowledges, never rewrites.
    reviewer = await key(gw, tenant, Role.WRITER, agent="reviewer")
    body = {
        "memory_id": hid,
        "type": "handoff",
        "content": {"text": "t", "to_agent": "x", "task": "t", "status": "done"},
    }
    assert (await gw.client.post(f"{API}/memory/store", json=body, headers=reviewer)).status_code == 403
    assert (await gw.client.post(f"{API}/handoffs/{hid}/ack", headers=planner)).status_code == 404
    assert (await gw.client.post(f"{API}/handoffs/{hid}/ack", headers=reviewer)).status_code == 200


async def test_scoped_key_cannot_supersede_another_agents_active_memory(gw: Gateway, tenant: str) -> None:
    admin = await key(gw, tenant, Role.WRITER)
    planner = await key(gw, tenant, Role.WRITER, agent="planner")
    coder = await key(gw, tenant, Role.WRITER, agent="coder")
    await store(gw, admin, {"type": "rule", "key": "tone", "content": text("answer", "formally")})
    await store(gw, coder, {"type": "decision", "key": "db", "content": text("use", "postgres")})
    # Writing the same (type, key) would replace the active memory: a rewrite of someone else's.
    for body in (
        {"type": "rule", "key": "tone", "content": text("answer", "casually")},  # unscoped: readable, 403
        {"type": "decision", "key": "db", "content": text("use", "sqlite")},  # the coder's: 403 all the same
    ):
        r = await gw.client.post(f"{API}/memory/store", json=body, headers=planner)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert "postgres" not in r.text  # what holds the key is not shown
    batch = await gw.client.post(
        f"{API}/memory/batch",
        json={
            "items": [
                {"type": "decision", "key": "db", "content": text("use", "sqlite")},
                {"type": "event", "content": text("x", "y")},
            ]
        },
        headers=planner,
    )
    assert [i["status"] for i in batch.json()["items"]] == [403, "accepted"], batch.text
    # Its own keys it replaces; an unscoped credential replaces anything.
    await store(gw, planner, {"type": "decision", "key": "cache", "content": text("use", "redis")})
    await store(gw, planner, {"type": "decision", "key": "cache", "content": text("use", "memcached")})
    await store(gw, admin, {"type": "decision", "key": "db", "content": text("use", "snowflake")})
    ctx = await gw.client.get(f"{API}/context", headers=admin, params={"budget_tokens": 500, "agent_id": "planner"})
    decisions = {i["key"]: i["text"] for i in ctx.json()["items"] if i["section"] == "decisions"}
    assert decisions == {"cache": "use memcached", "db": "use snowflake"}


async def test_scoped_reads_follow_one_rule_on_every_path(gw: Gateway, warehouse_table: Settings, tenant: str) -> None:
    admin = await key(gw, tenant, Role.WRITER)
    planner = await key(gw, tenant, Role.READER, agent="planner")
    word = f"zebra{uuid.uuid4().hex[:8]}"
    session = f"s-{uuid.uuid4().hex[:6]}"
    ids: dict[str, str] = {}
    for name, agent in (("own", "planner"), ("other", "coder"), ("unscoped", None)):
        body: dict[str, Any] = {"type": "event", "session_id": session, "content": text(word, name)}
        if agent:
            body["agent_id"] = agent
        ids[name] = (await store(gw, admin, body))["memory_id"]
    h = await gw.client.post(
        f"{API}/handoffs",
        json={"to_agent": "planner", "from_agent": "coder", "task": f"{word} inbox", "session_id": session},
        headers=admin,
        params={"wait": "visible"},
    )
    ids["inbox"] = h.json()["memory_id"]
    # A realistic tenant: thousands of other agents' memories holding the same word, in the hotset.
    await asyncio.gather(
        *(
            gw.client.post(
                f"{API}/memory/batch",
                json={
                    "items": [
                        {"type": "event", "agent_id": f"a{j % 7}", "content": text(word, f"bulk {i} {j}")}
                        for j in range(100)
                    ]
                },
                headers=admin,
            )
            for i in range(15)
        )
    )
    # And one only in the warehouse (older than the hotset keeps).
    cold_other, cold_own = f"m-cold-o-{uuid.uuid4().hex[:6]}", f"m-cold-p-{uuid.uuid4().hex[:6]}"
    insert_row(warehouse_table, tenant, cold_other, agent_id="coder", content={"text": f"{word} cold other"})
    insert_row(warehouse_table, tenant, cold_own, agent_id="planner", content={"text": f"{word} cold own"})
    allowed = {ids["own"], ids["unscoped"], ids["inbox"]}

    for name, mid in ids.items():
        r = await gw.client.get(f"{API}/memory/retrieve", params={"memory_id": mid}, headers=planner)
        assert r.status_code == (404 if name == "other" else 200), (name, r.text)
    r = await gw.client.get(f"{API}/memory/retrieve", params={"memory_id": cold_other}, headers=planner)
    assert r.status_code == 404

    found = await gw.client.get(
        f"{API}/memory/search", params={"q": word, "limit": 100, "session_id": session}, headers=planner
    )
    assert {x["memory_id"] for x in found.json()["results"]} == allowed, found.text
    everything = await gw.client.get(f"{API}/memory/search", params={"q": word, "limit": 100}, headers=planner)
    agents = {x["record"]["agent_id"] for x in everything.json()["results"]}
    assert agents <= {"planner", None, "coder"} and all(
        x["record"]["agent_id"] != "coder" or x["record"]["type"] == "handoff" for x in everything.json()["results"]
    )
    cold = await gw.client.get(
        f"{API}/memory/search", params={"q": f"{word} cold", "limit": 100, "agent_id": "planner"}, headers=planner
    )
    assert cold_own in {x["memory_id"] for x in cold.json()["results"]}
    assert cold_other not in {x["memory_id"] for x in everything.json()["results"]}

    ctx = await gw.client.get(f"{API}/context", params={"session_id": session}, headers=planner)
    assert ctx.status_code == 200, ctx.text
    got = {i["memory_id"] for i in ctx.json()["items"]}
    assert ids["other"] not in got and ids["own"] in got and ids["unscoped"] in got
    inbox = await gw.client.get(f"{API}/handoffs", params={"to_agent": "planner"}, headers=planner)
    assert [x["handoff_id"] for x in inbox.json()["handoffs"]] == [ids["inbox"]]
    # The unscoped credential reads the whole tenant.
    wide = await gw.client.get(f"{API}/context", params={"session_id": session}, headers=admin)
    assert ids["other"] in {i["memory_id"] for i in wide.json()["items"]}


async def test_scoped_context_pages_past_unreadable_entries_and_references_hide_them(gw: Gateway, tenant: str) -> None:
    admin = await key(gw, tenant, Role.WRITER)
    planner = await key(gw, tenant, Role.READER, agent="planner")
    session = f"s-{uuid.uuid4().hex[:6]}"
    # More than a page (MEMSTREAM_CONTEXT_PAGE_SIZE) of another agent's session decisions, newer
    # than the planner's own: the planner's context reads past them to its decision.
    n = gw.settings.context_page_size + 44
    t0 = datetime.now(UTC) - timedelta(hours=1)
    own = await store(
        gw,
        admin,
        {
            "type": "decision",
            "key": "own",
            "agent_id": "planner",
            "session_id": session,
            "content": text("own", "decision"),
            "occurred_at": (t0 - timedelta(minutes=1)).isoformat(),
        },
    )
    for start in range(0, n, 100):
        items = [
            {
                "type": "decision",
                "key": f"c{i}",
                "agent_id": "coder",
                "session_id": session,
                "content": text("coder", f"decision {i}"),
                "occurred_at": (t0 + timedelta(seconds=i)).isoformat(),
            }
            for i in range(start, min(start + 100, n))
        ]
        r = await gw.client.post(
            f"{API}/memory/batch", json={"items": items}, headers=admin, params={"wait": "visible"}
        )
        assert r.status_code == 202 and r.json()["accepted"] == len(items), r.text
    ctx = await gw.client.get(
        f"{API}/context", params={"session_id": session, "budget_tokens": 50_000}, headers=planner
    )
    assert ctx.status_code == 200, ctx.text
    decisions = [i["memory_id"] for i in ctx.json()["items"] if i["section"] == "decisions"]
    assert decisions == [own["memory_id"]], ctx.text
    wide = await gw.client.get(f"{API}/context", params={"session_id": session, "budget_tokens": 50_000}, headers=admin)
    assert sum(1 for i in wide.json()["items"] if i["section"] == "decisions") == n + 1

    # A handoff to the planner citing memories it may and may not read, one of them deleted.
    refs = {}
    for name, agent in (("coder", "coder"), ("gone", "coder"), ("mine", "planner"), ("shared", None)):
        body: dict[str, Any] = {"type": "event", "content": text("ref", name)}
        if agent:
            body["agent_id"] = agent
        refs[name] = (await store(gw, admin, body))["memory_id"]
    gone = await gw.client.delete(f"{API}/memory/{refs['gone']}", headers=admin, params={"wait": "visible"})
    assert gone.status_code == 202, gone.text
    h = await gw.client.post(
        f"{API}/handoffs",
        json={"to_agent": "planner", "from_agent": "coder", "task": "t", "citations": list(refs.values())},
        headers=admin,
        params={"wait": "visible"},
    )
    assert h.status_code == 202, h.text

    async def references(headers: dict[str, str]) -> dict[str, tuple[str, str | None]]:
        r = await gw.client.get(f"{API}/handoffs", params={"to_agent": "planner", "limit": "1"}, headers=headers)
        assert r.status_code == 200, r.text
        packet = r.json()["handoffs"][0]
        assert packet["handoff_id"] == h.json()["memory_id"]
        return {x["memory_id"]: (x["status"], x.get("text")) for x in packet["references"]}

    assert await references(planner) == {
        refs["coder"]: ("missing", None),
        refs["gone"]: ("missing", None),
        refs["mine"]: ("available", "ref mine"),
        refs["shared"]: ("available", "ref shared"),
    }
    wide_refs = await references(admin)
    assert wide_refs[refs["coder"]] == ("available", "ref coder") and wide_refs[refs["gone"]][0] == "deleted"


async def test_nested_metadata_is_refused_at_the_door(gw: Gateway, tenant: str) -> None:
    writer = await key(gw, tenant, Role.WRITER)

    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": True}
        for _ in range(depth - 1):
            value = {"k": value}
        return value

    r = await gw.client.post(
        f"{API}/memory/store",
        json={"type": "event", "content": {"text": "deep"}, "metadata": nested(200)},
        headers=writer,
    )
    assert r.status_code == 422 and "nests deeper than" in r.text, r.text
    h = await gw.client.post(
        f"{API}/handoffs", json={"to_agent": "b", "task": "t", "metadata": nested(60)}, headers=writer
    )
    assert h.status_code == 422, h.text
    ok = await store(gw, writer, {"type": "event", "content": {"text": "deep"}, "metadata": nested(MAX_JSON_DEPTH)})
    assert ok["status"] == "visible"  # what the gateway accepts the worker stores


async def test_underscore_matches_literally_in_the_warehouse(
    gw: Gateway, warehouse_table: Settings, tenant: str
) -> None:
    reader = await key(gw, tenant, Role.READER)
    literal, lookalike = f"m-lit-{uuid.uuid4().hex[:6]}", f"m-look-{uuid.uuid4().hex[:6]}"
    insert_row(warehouse_table, tenant, literal, content={"text": "config foo_bar set"})
    insert_row(warehouse_table, tenant, lookalike, content={"text": "config fooxbar set"})
    rows = await gw.services.warehouse.search(tenant, SearchParams(terms=("foo_bar",)), 50)
    assert [r.memory_id for r in rows] == [literal]
    r = await gw.client.get(f"{API}/memory/search", params={"q": "foo_bar"}, headers=reader)
    body = r.json()
    assert [x["memory_id"] for x in body["results"]] == [literal] and body["candidates_examined"] == 1, r.text


async def test_forged_host_gets_no_redirect(gw: Gateway, tenant: str) -> None:
    writer = await key(gw, tenant, Role.WRITER)
    for method, path in (("POST", f"{API}/memory/store/"), ("GET", f"{API}/memory/stats/"), ("GET", f"{API}/context/")):
        r = await gw.client.request(
            method, path, json={"type": "event", "content": {"text": "x"}}, headers={**writer, "Host": "evil.example"}
        )
        assert r.status_code == 404 and "location" not in r.headers, (path, r.status_code, r.headers)
        assert r.json()["error"]["code"] == "not_found"


async def test_one_tenants_stats_do_not_move_when_another_writes(gw: Gateway, stack: Stack) -> None:
    a, b = f"t-a-{uuid.uuid4().hex[:8]}", f"t-b-{uuid.uuid4().hex[:8]}"
    ka, kb = await key(gw, a, Role.WRITER), await key(gw, b, Role.WRITER)
    first = await store(gw, ka, {"type": "event", "content": {"text": "a"}})
    assert first["offset"] == 1  # the tenant's own write number, not the partition's offset

    async def stats(k: dict[str, str]) -> dict[str, Any]:
        r = await gw.client.get(f"{API}/memory/stats", headers=k)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    before = await stats(ka)
    assert set(before["consumer_lag"]) == {"status"} and set(before["sink_lag"]) == {"status"}
    assert before["dead_letters"] == 0
    outs = [await store(gw, kb, {"type": "event", "content": {"text": f"b {i}"}}) for i in range(5)]
    assert [o["offset"] for o in outs] == [1, 2, 3, 4, 5]
    publish(stack.settings(), [event(b, f"bad-{uuid.uuid4().hex[:6]}", type=None)])  # a dead letter of b
    deadline = asyncio.get_running_loop().time() + 30
    while (await stats(kb))["dead_letters"] < 1:
        assert asyncio.get_running_loop().time() < deadline, "b's dead letter was not counted"
        await asyncio.sleep(0.1)
    after = await stats(ka)
    for field in ("counts_by_type", "counters", "hotset_size", "hotset_by_type", "dead_letters"):
        assert after[field] == before[field], field
    assert (await store(gw, ka, {"type": "event", "content": {"text": "a2"}}))["offset"] == 2
