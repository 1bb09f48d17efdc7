"""Issue 12 across real parts (Tansu, the ingest and warehouse agents, redis-server, the warehouse
emulator): context at size, the drift guard, supersession edges, the skew guard and the handoff
inbox. Events are published straight to memory.events; reads go through the gateway over HTTP."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from app.models import derive_memory_id
from sinks.hotset import keys
from tests.support.gateway import Gateway
from tests.support.kafka import event, publish, read_topic

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FILLER = 3000  # a tenant holding thousands of memories


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


async def visible(gw: Gateway, tenant: str, event_id: str, timeout_s: float = 60.0) -> None:
    """Poll (with a deadline) until the worker processed `event_id`: a tenant's events are one
    partition, processed in order, so everything published before it is processed too."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await gw.services.redis.exists(keys.seen(tenant, event_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{event_id} not processed within {timeout_s}s")


async def until(predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")


def filler(tenant: str, n: int = FILLER) -> list[dict[str, Any]]:
    return [
        event(tenant, f"f{i}", session_id=f"other-{i % 50}", content={"text": f"chatter {i}"}, occurred_at=at(i / 60))
        for i in range(n)
    ]


async def context(gw: Gateway, tenant: str, **params: Any) -> dict[str, Any]:
    r = await gw.get(tenant, "/api/v2/context", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def dead_letters(gw: Gateway, tenant: str) -> list[dict[str, Any]]:
    msgs = read_topic(gw.settings, gw.settings.topic_deadletter)
    return [d for d in (orjson.loads(v) for _, v in msgs) if d.get("tenant_id") == tenant]


# ---- 1. context right at any size ---------------------------------------------------------------


async def test_context_holds_the_first_rule_and_decision_among_thousands(gateway: Gateway, tenant: str) -> None:
    evs = [
        event(tenant, "rule-0", type="rule", key="tone", session_id=None,
              content={"text": "always answer in formal English"}, occurred_at=at(-100)),
        event(tenant, "dec-0", type="decision", key="db", session_id=None,
              content={"text": "use Snowflake for the warehouse"}, occurred_at=at(-99)),
    ]  # fmt: skip
    evs += filler(tenant)
    evs += [
        event(tenant, f"dec-{i}", type="decision", key=f"d{i}", session_id=None,
              content={"text": f"decision {i}"}, occurred_at=at(100 + i))
        for i in range(1, 61)
    ]  # fmt: skip
    evs += [
        event(tenant, f"rule-{i}", type="rule", key=f"r{i}", session_id=None,
              content={"text": f"rule {i}"}, occurred_at=at(200 + i))
        for i in range(1, 31)
    ]  # fmt: skip
    publish(gateway.settings, evs)
    await visible(gateway, tenant, "rule-30")

    ctx = await context(gateway, tenant, budget_tokens=4000)
    by_id = {i["memory_id"]: i for i in ctx["items"]}
    assert derive_memory_id(tenant, "rule-0") in by_id and derive_memory_id(tenant, "dec-0") in by_id
    assert sum(1 for i in ctx["items"] if i["section"] == "decisions") == 61
    assert sum(1 for i in ctx["items"] if i["section"] == "rules") == 31
    assert ctx["omitted"]["decisions"] == ctx["omitted"]["rules"] == 0
    assert ctx["warehouse_consulted"] is False

    # A short budget: sections give way from the last; omitted says how many each left out.
    short = await context(gateway, tenant, budget_tokens=60)
    sections = [i["section"] for i in short["items"]]
    assert sections and set(sections) == {"rules"}
    assert short["omitted"]["rules"] == 31 - len(sections) and short["omitted"]["decisions"] == 61


async def test_context_pages_through_hundreds_of_active_decisions(gateway: Gateway, tenant: str) -> None:
    n = 700  # more than a page of the per-scope index
    evs = [
        event(tenant, f"d{i}", type="decision", key=f"k{i}", session_id=None, content={"text": f"choice {i}"},
              occurred_at=at(i))
        for i in range(n)
    ]  # fmt: skip
    # Agent-scoped and session-scoped standing knowledge: in scope only for that agent / session.
    evs.append(event(tenant, "a-rule", type="rule", key="ar", session_id=None, agent_id="a1",
                     content={"text": "agent one rule"}, occurred_at=at(1)))  # fmt: skip
    evs.append(event(tenant, "s-rule", type="rule", key="sr", session_id="s9",
                     content={"text": "session nine rule"}, occurred_at=at(1)))  # fmt: skip
    evs += filler(tenant, 1000)
    publish(gateway.settings, evs)
    await visible(gateway, tenant, f"f{999}")

    ctx = await context(gateway, tenant, budget_tokens=50_000, agent_id="a1")
    decisions = [i for i in ctx["items"] if i["section"] == "decisions"]
    assert len(decisions) == n and ctx["omitted"]["decisions"] == 0
    assert [i["text"] for i in ctx["items"] if i["section"] == "rules"] == ["agent one rule"]
    other = await context(gateway, tenant, budget_tokens=200, session_id="s9")
    assert [i["text"] for i in other["items"] if i["section"] == "rules"] == ["session nine rule"]
    assert other["omitted"]["decisions"] > 600  # the budget holds a few of the 700


async def test_an_active_rule_expired_from_the_hotset_comes_back_from_the_warehouse(
    gateway: Gateway, tenant: str, rds: redis.Redis
) -> None:
    rule = event(tenant, "short-lived", type="rule", key="lang", session_id=None, ttl_seconds=3,
                 content={"text": "reply in Dutch"}, occurred_at=datetime.now(UTC).isoformat())  # fmt: skip
    publish(gateway.settings, [rule, *filler(tenant, 500)])
    await visible(gateway, tenant, "f499")
    mid = derive_memory_id(tenant, "short-lived")
    svc = gateway.services
    await until(lambda: svc.warehouse.get(tenant, mid))  # the sink flushed it
    await until(lambda: _absent(rds, keys.memory(tenant, mid)))  # its hotset copy expired

    ctx = await context(gateway, tenant, budget_tokens=500)
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "rules"] == [mid]
    assert ctx["warehouse_consulted"] is True
    # re-warmed (for its own ttl_seconds): the hotset holds everything again
    again = await context(gateway, tenant, budget_tokens=500)
    assert [i["memory_id"] for i in again["items"] if i["section"] == "rules"] == [mid]
    assert again["warehouse_consulted"] is False


async def _absent(rds: redis.Redis, key: str) -> bool:
    return not rds.exists(key)


# ---- 2. drift guard -------------------------------------------------------------------------


async def test_a_summary_citing_a_missing_memory_is_dead_lettered_or_refused(gateway: Gateway, tenant: str) -> None:
    publish(gateway.settings, [
        event(tenant, "bad-sum", type="summary", content={"text": "made up"}, citations=["m-doesnotexist"]),
        *filler(tenant, 200),
    ])  # fmt: skip
    await visible(gateway, tenant, "f199")
    dead = await until(lambda: _async(dead_letters(gateway, tenant)))
    assert dead[0]["stage"] == "drift" and "m-doesnotexist" in dead[0]["reason"]
    assert base64.b64decode(dead[0]["original_b64"]).find(b"bad-sum") > 0
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": derive_memory_id(tenant, "bad-sum")})
    assert r.status_code == 404

    r = await gateway.post(tenant, "/api/v2/memory/store", json={
        "type": "summary", "session_id": "s1", "content": {"text": "made up"}, "citations": ["m-doesnotexist"],
    })  # fmt: skip
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_citations" and err["details"]["missing"] == ["m-doesnotexist"]


async def _async(value: Any) -> Any:
    return value


async def test_a_summary_goes_stale_when_a_cited_memory_is_deleted(gateway: Gateway, tenant: str) -> None:
    cited = await gateway.store(tenant, {"type": "event", "session_id": "s1", "content": {"text": "we chose pg"}})
    first = await gateway.store(tenant, {
        "type": "summary", "session_id": "s1", "content": {"text": "they chose pg"}, "citations": [cited["memory_id"]],
    })  # fmt: skip
    ctx = await context(gateway, tenant, session_id="s1")
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "summary"] == [first["memory_id"]]

    r = await gateway.delete(tenant, f"/api/v2/memory/{cited['memory_id']}", params={"wait": "visible"})
    assert r.status_code == 202, r.text
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": first["memory_id"]})
    assert r.status_code == 200 and r.json()["stale"] == {"reason": f"cited memory {cited['memory_id']} was deleted"}
    ctx = await context(gateway, tenant, session_id="s1")
    assert [i for i in ctx["items"] if i["section"] == "summary"] == [] and ctx["omitted"]["summary"] == 1

    other = await gateway.store(tenant, {"type": "event", "session_id": "s1", "content": {"text": "we kept pg"}})
    newer = await gateway.store(tenant, {
        "type": "summary", "session_id": "s1", "content": {"text": "pg stays"}, "citations": [other["memory_id"]],
    })  # fmt: skip
    ctx = await context(gateway, tenant, session_id="s1")
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "summary"] == [newer["memory_id"]]
    r = await gateway.post(tenant, "/api/v2/memory/store", json={
        "type": "summary", "session_id": "s1", "content": {"text": "again"}, "citations": [cited["memory_id"]],
    })  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["details"]["deleted"] == [cited["memory_id"]]


# ---- 3. supersession edges ----------------------------------------------------------------------


async def test_deleting_the_active_decision_makes_the_newest_remaining_one_active(
    gateway: Gateway, tenant: str
) -> None:
    evs = [
        event(tenant, f"v{i}", type="decision", key="db", session_id=None, content={"text": f"database {i}"},
              occurred_at=at(i))
        for i in range(3)
    ]  # fmt: skip
    publish(gateway.settings, [*evs, *filler(tenant, 300)])
    await visible(gateway, tenant, "f299")
    v1, v2 = derive_memory_id(tenant, "v1"), derive_memory_id(tenant, "v2")
    ctx = await context(gateway, tenant)
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "decisions"] == [v2]

    r = await gateway.delete(tenant, f"/api/v2/memory/{v2}", params={"wait": "visible"})
    assert r.status_code == 202, r.text
    ctx = await context(gateway, tenant)
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "decisions"] == [v1]
    rec = (await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": v1})).json()["record"]
    assert rec["superseded_by"] is None

    # A later write of the key supersedes the re-activated one.
    publish(gateway.settings, [event(tenant, "v3", type="decision", key="db", session_id=None,
                                     content={"text": "database 3"}, occurred_at=at(10))])  # fmt: skip
    await visible(gateway, tenant, "v3")
    ctx = await context(gateway, tenant)
    assert [i["memory_id"] for i in ctx["items"] if i["section"] == "decisions"] == [derive_memory_id(tenant, "v3")]
    rec = (await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": v1})).json()["record"]
    assert rec["superseded_by"] == derive_memory_id(tenant, "v3")


async def test_an_event_from_the_far_future_is_dead_lettered(gateway: Gateway, tenant: str) -> None:
    now = datetime.now(UTC)
    publish(gateway.settings, [
        event(tenant, "future", type="decision", key="k", session_id=None, content={"text": "from 2030"},
              occurred_at=(now + timedelta(days=365)).isoformat()),
        event(tenant, "present", type="decision", key="k", session_id=None, content={"text": "from now"},
              occurred_at=now.isoformat()),
    ])  # fmt: skip
    await visible(gateway, tenant, "present")
    dead = await until(lambda: _async(dead_letters(gateway, tenant)))
    assert dead[0]["stage"] == "skew" and "ahead of the message timestamp" in dead[0]["reason"]
    ctx = await context(gateway, tenant)
    assert [i["text"] for i in ctx["items"] if i["section"] == "decisions"] == ["from now"]
    r = await gateway.post(tenant, "/api/v2/memory/store", json={
        "type": "event", "content": {"text": "x"}, "occurred_at": (now + timedelta(days=1)).isoformat(),
    })  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "clock_skew"


# ---- 4. handoffs --------------------------------------------------------------------------------


async def test_the_inbox_pages_every_pending_packet_and_resolves_references(gateway: Gateway, tenant: str) -> None:
    live = event(tenant, "ref-live", content={"text": "the spec"}, occurred_at=at(0))
    doomed = event(tenant, "ref-doomed", content={"text": "old notes"}, occurred_at=at(0))
    live_id, doomed_id = derive_memory_id(tenant, "ref-live"), derive_memory_id(tenant, "ref-doomed")

    def packet(i: int, status: str) -> dict[str, Any]:
        return event(tenant, f"h{i}", type="handoff", session_id=None, agent_id="coder",
                     content={"text": f"packet {i}", "to_agent": "bob", "task": f"task {i}", "status": status},
                     citations=[live_id, doomed_id, "m-never"], occurred_at=at(10 + i))  # fmt: skip

    pending = [packet(i, "open") for i in range(150)]
    done = [packet(i, "done") for i in range(150, 450)]  # newer, already acknowledged
    publish(gateway.settings, [live, doomed, *pending, *done, *filler(tenant, 500)])
    await visible(gateway, tenant, "f499")
    r = await gateway.delete(tenant, f"/api/v2/memory/{doomed_id}", params={"wait": "visible"})
    assert r.status_code == 202, r.text

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"to_agent": "bob", "limit": "40", **({"cursor": cursor} if cursor else {})}
        r = await gateway.get(tenant, "/api/v2/handoffs", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [h["handoff_id"] for h in page["handoffs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 150
    assert set(seen) == {derive_memory_id(tenant, f"h{i}") for i in range(150)}

    first = (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "bob", "limit": "1"})).json()
    assert [(x["memory_id"], x["status"]) for x in first["handoffs"][0]["references"]] == [
        (live_id, "available"),
        (doomed_id, "deleted"),
        ("m-never", "missing"),
    ]
    assert first["handoffs"][0]["references"][0]["text"] == "the spec"

    hid = first["handoffs"][0]["handoff_id"]
    acks = await asyncio.gather(*[
        gateway.post(tenant, f"/api/v2/handoffs/{hid}/ack", json={"agent_id": "bob"}) for _ in range(3)
    ])  # fmt: skip
    assert sorted(a.status_code for a in acks) == [200, 409, 409]
    after = (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "bob", "limit": "100"})).json()
    assert hid not in {h["handoff_id"] for h in after["handoffs"]}
    r = await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "bob", "cursor": "bm9wZQ"})
    assert r.status_code == 422 and set(r.json()) == {"error"}


async def test_cached_standing_sections_follow_every_change_of_standing_knowledge(
    gateway: Gateway, tenant: str
) -> None:
    """Standing sections are cached per call shape under the tenant's standing generation: each
    write that may change them (a rule replaced, a decision deleted, a task done) is seen by the
    very next call of the same shape."""

    async def sections() -> dict[str, list[str]]:
        ctx = await context(gateway, tenant, session_id="s1", budget_tokens=2000)
        out: dict[str, list[str]] = {}
        for i in ctx["items"]:
            out.setdefault(i["section"], []).append(i["text"])
        return out

    def standing(eid: str, kind: str, key: str, text: str, minute: int, **kw: Any) -> dict[str, Any]:
        return event(tenant, eid, type=kind, key=key, content={"text": text, **kw}, occurred_at=at(minute))

    evs = [
        standing("r1", "rule", "tone", "answer formally", 1, session_id=None),
        standing("d1", "decision", "db", "use Snowflake", 2, session_id=None),
        standing("t1", "task", "ship", "ship the release", 3, status="open"),
        *filler(tenant, 1000),
    ]
    publish(gateway.settings, evs)
    await visible(gateway, tenant, "f999")
    first = await sections()
    assert first["rules"] == ["answer formally"] and first["decisions"] == ["use Snowflake"]
    assert first["tasks"] == ["ship the release"]
    assert await sections() == first  # the second call of the shape is answered from the cache
    assert gateway.services.standing.get((tenant, "s1", None, None, None, 2000)) is not None

    publish(gateway.settings, [standing("r2", "rule", "tone", "answer casually", 10, session_id=None)])
    await visible(gateway, tenant, "r2")
    assert (await sections())["rules"] == ["answer casually"]  # the replaced rule is gone at once

    r = await gateway.delete(tenant, f"/api/v2/memory/{derive_memory_id(tenant, 'd1')}", params={"wait": "visible"})
    assert r.status_code == 202, r.text
    assert "decisions" not in await sections()

    publish(gateway.settings, [standing("t2", "task", "ship", "ship the release", 11, status="done")])
    await visible(gateway, tenant, "t2")
    assert "tasks" not in await sections()
    # A recent event is never cached: the session's new turn is in the next call.
    publish(
        gateway.settings, [event(tenant, "e1", session_id="s1", content={"text": "hello there"}, occurred_at=at(12))]
    )
    await visible(gateway, tenant, "e1")
    assert (await sections())["recent"] == ["hello there"]
