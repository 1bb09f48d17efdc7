"""The gateway across real parts: Tansu broker, the ingest worker, redis-server, the warehouse
emulator. Each test isolates itself by tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from app import devstack
from app.models import derive_memory_id
from app.settings import Settings
from sinks.hotset import keys
from sinks.hotset import layout as hotset_format
from tests.support.gateway import Gateway, insert_row, running, worker_ready
from tests.support.stack import Proc, Stack, stored

STORE = "/api/v2/memory/store"


def ev(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "event", "session_id": "s1", "content": {"text": "hello"}}
    body.update(over)
    return body


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    if code is not None:
        assert body["error"]["code"] == code
    err: dict[str, Any] = body["error"]
    return err


async def wait_for(predicate: Any, timeout_s: float = 30.0) -> Any:
    """Async twin of conftest.wait_until: poll an async predicate until it is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")


# ---- ops ---------------------------------------------------------------------------------------


async def test_health_ready_metrics_openapi_docs(gateway: Gateway) -> None:
    c = gateway.client
    assert (await c.get("/health")).json() == {"status": "ok"}
    ready = await c.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert {k: v["status"] for k, v in ready.json()["checks"].items()} == {
        "redis": "up",
        "kafka": "up",
        "warehouse": "up",
    }
    spec = (await c.get("/openapi.json")).json()
    search = spec["paths"]["/api/v2/memory/search"]["get"]
    assert {"name": gateway.settings.dev_tenant_header, "in": "header", "required": True}.items() <= next(
        p for p in search["parameters"] if p["in"] == "header"
    ).items()
    assert "swagger" in (await c.get("/docs")).text.lower()
    metrics = await c.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'memstream_gateway_request_seconds_count{method="GET",route="/ready",status="2xx"}' in metrics.text


async def test_errors_have_the_contract_shape(gateway: Gateway, tenant: str) -> None:
    assert_error(await gateway.client.get("/nope"), 404, "not_found")
    assert_error(await gateway.client.delete("/health"), 405, "method_not_allowed")
    assert_error(await gateway.client.get("/api/v2/memory/retrieve", params={"memory_id": "x"}), 401)
    bad = await gateway.client.get(
        "/api/v2/memory/retrieve",
        params={"memory_id": "x"},
        headers={gateway.settings.dev_tenant_header: "a b"},
    )
    assert assert_error(bad, 401, "unauthorized")["details"] == {"reason": "dev_tenant"}
    err = assert_error(await gateway.get(tenant, "/api/v2/memory/search", params={"q": "x", "limit": "false"}), 422)
    assert err["details"][0]["loc"] == "query.limit"
    for value in ("1", "yes", "0"):  # lax mode would take these as booleans
        r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "x", "include_superseded": value})
        assert_error(r, 422)


async def test_dev_header_off_means_401(stack: Stack) -> None:
    async with running(stack.settings(dev_tenant_header_enabled=False)) as gw:
        r = await gw.get("acme", "/api/v2/memory/retrieve", params={"memory_id": "m"})
        assert assert_error(r, 401, "unauthorized")["details"] == {"reason": "dev_header_disabled"}


# ---- writes ------------------------------------------------------------------------------------


async def test_store_read_your_writes(gateway: Gateway, tenant: str) -> None:
    out = await gateway.store(tenant, ev(event_id="first", content={"text": "read your writes"}))
    assert out["status"] == "visible" and out["event_id"] == "first"
    assert out["memory_id"] == derive_memory_id(tenant, "first")
    assert out["topic"] == gateway.settings.topic_events and out["offset"] >= 0 and len(out["version"]) == 32
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": out["memory_id"]})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "hotset"
    assert r.json()["record"]["content"]["text"] == "read your writes"
    assert r.json()["record"]["tenant_id"] == tenant
    # Other tenants do not see it.
    other = await gateway.get(f"{tenant}x", "/api/v2/memory/retrieve", params={"memory_id": out["memory_id"]})
    assert other.status_code in (404, 503)
    # Without wait: accepted, with generated event id and timestamp.
    accepted = await gateway.store(tenant, ev(content={"text": "no wait"}), wait=False)
    assert accepted["status"] == "accepted" and accepted["event_id"]


async def test_store_skipped_when_not_remembered(gateway: Gateway, tenant: str) -> None:
    out = await gateway.store(tenant, ev(content={"text": "forget me"}, remember=False))
    assert out["status"] == "skipped"


async def test_store_tenant_must_match(gateway: Gateway, tenant: str) -> None:
    assert_error(await gateway.post(tenant, STORE, json=ev(tenant_id="someone-else")), 403)
    assert (await gateway.store(tenant, ev(tenant_id=tenant), wait=False))["status"] == "accepted"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (ev(importance=True), "body.importance"),
        (ev(schema_version=True), "body.schema_version"),
        (ev(ttl_seconds="5"), "body.ttl_seconds"),
        (ev(bogus=1), "body.bogus"),
        (ev(content={"text": 5}), "body.content.text"),
        (ev(type="task", content={"text": "t"}), "body"),  # task needs a status (model rule)
        (ev(type="memo"), "body.type"),
        (ev(occurred_at=1700000000), "body.occurred_at"),  # RFC 3339 strings only
        (ev(metadata={"n": 2**70}), "body"),  # would poison the worker's orjson size check
        (ev(occurred_at="1969-12-31T23:59:59Z"), "body.occurred_at"),  # versions start at the epoch
        (ev(channel={"id": "c", "visibility": "secret"}), "body.channel.visibility"),
    ],
)
async def test_store_validation_is_strict(gateway: Gateway, tenant: str, body: dict[str, Any], loc: str) -> None:
    err = assert_error(await gateway.post(tenant, STORE, json=body), 422, "validation_error")
    # A union field reports per branch (body.importance.int): a prefix match is the same field.
    locs = [d["loc"] for d in err["details"]]
    assert loc in locs or (loc != "body" and any(x.startswith(f"{loc}.") for x in locs)), err


async def test_body_limits(gateway: Gateway, tenant: str) -> None:
    limit = gateway.settings.gateway_max_body_bytes
    big = ev(content={"text": "x" * (limit + 10)})
    err = assert_error(await gateway.post(tenant, STORE, json=big), 413, "payload_too_large")
    assert err["details"]["max_bytes"] == limit

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096

    r = await gateway.client.post(STORE, content=chunks(), headers=gateway.headers(tenant))
    assert "content-length" not in r.request.headers  # really chunked
    assert_error(r, 413)
    assert_error(
        await gateway.post(tenant, STORE, content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )


async def test_batch_per_item_results(gateway: Gateway, tenant: str) -> None:
    items = [
        ev(event_id="b1", content={"text": "one"}),
        ev(type="task", content={"text": "no status"}),  # well formed, breaks an event rule
        ev(event_id="b3", content={"text": "three"}),
    ]
    r = await gateway.post(tenant, "/api/v2/memory/batch", json={"items": items}, params={"wait": "visible"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2 and body["rejected"] == 1
    assert [i["index"] for i in body["items"]] == [0, 1, 2]
    assert body["items"][0]["status"] == "visible"
    assert body["items"][2]["memory_id"] == derive_memory_id(tenant, "b3")
    assert body["items"][1]["status"] == 422 and body["items"][1]["error"]["details"][0]["loc"] == "body.items.1"
    # A malformed item (a bad type, an unknown field, not an object) is reported on its own too.
    mixed = [ev(event_id="b4"), ev(importance=False), ev(typo=1), "not an object", ev(ttl_seconds="5")]
    r = await gateway.post(tenant, "/api/v2/memory/batch", json={"items": mixed})
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["rejected"]) == (1, 4), r.text
    bad = {
        i["index"]: i["error"]["details"][0]["loc"].split(".constrained")[0]
        for i in r.json()["items"]
        if i["status"] == 422
    }
    assert bad == {
        1: "body.items.1.importance",
        2: "body.items.2.typo",
        3: "body.items.3",
        4: "body.items.4.ttl_seconds",
    }
    err = assert_error(await gateway.post(tenant, "/api/v2/memory/batch", json={"items": [ev(importance=2)]}), 422)
    assert err["details"][0]["error"]["details"][0]["loc"].startswith("body.items.0.importance")  # none published
    too_many = [ev()] * (gateway.settings.gateway_batch_max_items + 1)
    assert_error(await gateway.post(tenant, "/api/v2/memory/batch", json={"items": too_many}), 422)
    assert_error(await gateway.post(tenant, "/api/v2/memory/batch", json={"items": [ev(op="delete")]}), 422)


async def test_delete_forgets(gateway: Gateway, tenant: str) -> None:
    out = await gateway.store(tenant, ev(content={"text": "short lived"}))
    r = await gateway.delete(tenant, f"/api/v2/memory/{out['memory_id']}", params={"wait": "visible"})
    assert r.status_code == 202 and r.json()["status"] == "visible", r.text
    gone = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": out["memory_id"]})
    assert_error(gone, 404, "deleted")


async def test_delete_orders_after_a_memory_stamped_in_the_future(gateway: Gateway, tenant: str) -> None:
    from datetime import UTC, datetime, timedelta

    ahead = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()  # a client clock ahead of ours (within the skew)
    out = await gateway.store(tenant, ev(content={"text": "from the future"}, occurred_at=ahead))
    r = await gateway.delete(tenant, f"/api/v2/memory/{out['memory_id']}", params={"wait": "visible"})
    assert r.status_code == 202 and r.json()["version"] > out["version"], r.text
    gone = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": out["memory_id"]})
    assert_error(gone, 404, "deleted")


async def test_wait_visible_times_out_with_504(stack: Stack, warehouse_table: Settings, tenant: str) -> None:
    # A topic prefix no worker consumes: the write is acknowledged but never becomes visible.
    settings = stack.settings(topic_prefix="no-worker.", wait_visible_timeout_s=0.3)
    from app.kafka import ensure_topics

    ensure_topics(settings)
    async with running(settings) as gw:
        err = assert_error(await gw.post(tenant, STORE, json=ev(), params={"wait": "visible"}), 504)
        assert err["details"]["pending"][0]["offset"] >= 0


async def test_broker_down_is_503_never_202(stack: Stack, tenant: str) -> None:
    settings = stack.settings(kafka_bootstrap=f"127.0.0.1:{devstack.free_port()}")
    async with running(settings, produce_timeout_s=1.0) as gw:
        assert_error(await gw.post(tenant, STORE, json=ev()), 503, "broker_unavailable")
        r = await gw.post(tenant, "/api/v2/handoffs", json={"to_agent": "b", "task": "t"})
        assert_error(r, 503)
        ready = await gw.client.get("/ready")
        err = assert_error(ready, 503, "not_ready")
        assert err["details"]["checks"]["kafka"]["status"] == "down"
        assert err["details"]["checks"]["redis"]["status"] == "up"


# ---- retrieve ----------------------------------------------------------------------------------


async def test_retrieve_falls_back_to_the_warehouse_and_rewarms(
    gateway: Gateway, warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    insert_row(warehouse_table, tenant, "wh-1", type="decision", key="db", content={"text": "use duckdb"},
               superseded_by="wh-2", importance=0.9)  # fmt: skip
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "wh-1"})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "warehouse"
    rec = r.json()["record"]
    assert rec["content"] == {"text": "use duckdb"} and rec["superseded_by"] == "wh-2" and rec["type"] == "decision"
    assert rec["version"] == f"{1000:032d}" and rec["importance"] == 0.9 and rec["deleted_at"] is None
    # Re-warmed: the hotset now holds it, with its TTL, and answers the next read.
    assert stored(rds, tenant, "wh-1").version == f"{1000:032d}"  # type: ignore[union-attr]
    assert rds.ttl(keys.memory(tenant, "wh-1")) > 0
    again = await gateway.get(
        tenant, "/api/v2/memory/retrieve", params={"memory_id": "wh-1", "memory_type": "decision"}
    )
    assert again.json()["source"] == "hotset" and again.json()["record"]["superseded_by"] == "wh-2"
    assert_error(
        await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "wh-1", "memory_type": "rule"}),
        404,
    )


async def test_rewarm_never_overwrites_a_newer_version(
    gateway: Gateway, warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    from sinks.warehouse import row_to_record

    newer = f"{2000:032d}"
    rds.set(keys.memory(tenant, "m"), hotset_format.encode(newer, "{}", deleted=True))  # a newer tombstone
    row = insert_row(warehouse_table, tenant, "m")
    rec = row_to_record({**row, "is_deleted": False}, "memory.events")
    assert not await gateway.services.reader.rewarm(rec, 60)
    assert stored(rds, tenant, "m").version == newer  # type: ignore[union-attr]
    assert_error(await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "m"}), 404, "deleted")


async def test_retrieve_unknown_and_deleted_in_warehouse(
    gateway: Gateway, warehouse_table: Settings, tenant: str
) -> None:
    from datetime import UTC, datetime

    insert_row(warehouse_table, tenant, "dead", deleted_at=datetime.now(UTC).replace(tzinfo=None))
    assert_error(await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "dead"}), 404, "deleted")
    assert_error(
        await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "nothing"}),
        404,
        "not_found",
    )


async def test_warehouse_down_is_degraded_not_500(stack: Stack, tenant: str) -> None:
    settings = stack.settings(snowflake_port=devstack.free_port(), snowflake_network_timeout_s=1)
    async with running(settings) as gw:
        ready = await gw.client.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert ready.json()["checks"]["warehouse"]["status"] == "down"
        miss = await gw.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "nowhere"})
        assert_error(miss, 503, "warehouse_unavailable")
        s = await gw.get(tenant, "/api/v2/memory/search", params={"q": "anything"})
        assert s.status_code == 200 and s.json()["warehouse"] == "unavailable", s.text


@pytest.mark.parametrize("fast_reads", [True, False], ids=["hot", "fastapi"])
async def test_redis_down_is_503_and_writes_still_land(stack: Stack, tenant: str, fast_reads: bool) -> None:
    dead = f"redis://127.0.0.1:{devstack.free_port()}/0"
    settings = stack.settings(
        redis_url=dead, redis_timeout_s=0.5, gateway_fast_reads=fast_reads, wait_visible_timeout_s=1
    )
    async with running(settings) as gw:
        ready = await gw.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["error"]["details"]["checks"]["redis"]["status"] == "down"
        for path, params in (
            ("/api/v2/memory/retrieve", {"memory_id": "m"}),
            ("/api/v2/memory/search", {"q": "anything"}),
            ("/api/v2/context", {"session_id": "s"}),
            ("/api/v2/memory/stats", {}),
        ):
            r = await gw.get(tenant, path, params=params)
            assert_error(r, 503, "hotset_unavailable")
            assert r.headers["retry-after"] == "1"
        # Writes go to the broker, not to Redis: accepted while the hotset is down.
        w = await gw.post(tenant, "/api/v2/memory/store", json={"type": "event", "content": {"text": "kept"}})
        assert w.status_code == 202, w.text
        # Read-your-writes cannot be confirmed: accepted, not visible (504 with the write), not 503.
        w = await gw.post(
            tenant, STORE, json={"type": "event", "content": {"text": "kept"}}, params={"wait": "visible"}
        )
        # The tenant's write number lives in Redis too: unknown (-1) while it is down.
        assert assert_error(w, 504, "visibility_timeout")["details"]["pending"][0]["offset"] == -1


# ---- search ------------------------------------------------------------------------------------


async def seed(gateway: Gateway, tenant: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = await gateway.post(tenant, "/api/v2/memory/batch", json={"items": items}, params={"wait": "visible"})
    assert r.status_code == 202 and r.json()["rejected"] == 0, r.text
    out: list[dict[str, Any]] = r.json()["items"]
    return out


async def test_search_ranks_the_newer_of_the_hotset_and_warehouse_copies(
    gateway: Gateway, warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    """The warehouse lags the hotset by a flush: its older copy of a memory must not outrank what
    the hotset knows (a delete, a new visibility, a supersession), nor an older hotset copy it."""
    from sinks.warehouse import row_to_record

    def v(n: int) -> str:
        return f"{n:032d}"

    def hot(row: dict[str, Any], version: int, deleted: bool = False, **update: Any) -> None:
        rec = row_to_record({**row, "version": version}, "memory.events").model_copy(update=update)
        rds.set(
            keys.memory(tenant, rec.memory_id),
            hotset_format.encode(v(version), rec.to_json().decode(), deleted=deleted),
        )

    pub = {"visibility": "public"}
    hot(insert_row(warehouse_table, tenant, "gone", content={"text": "quokka gone"}, **pub), 2000, deleted=True)
    hidden = insert_row(warehouse_table, tenant, "hidden", content={"text": "quokka hidden"}, **pub)
    hot(hidden, 2000, visibility="private")
    fresh = insert_row(warehouse_table, tenant, "fresh", version=2000, content={"text": "quokka new"}, **pub)
    hot(fresh, 1000, content={"text": "quokka old"})
    insert_row(warehouse_table, tenant, "lagging", type="decision", key="q", content={"text": "quokka lagging"}, **pub)
    rds.hset(keys.active(tenant), keys.active_field("decision", "q"), f"{v(3000)}|winner")

    async def found(**params: Any) -> dict[str, dict[str, Any]]:
        r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "quokka", **params})
        assert r.status_code == 200 and r.json()["warehouse"] == "used", r.text
        return {h["memory_id"]: h for h in r.json()["results"]}

    public = await found(channel_visibility="public")
    assert set(public) == {"fresh"}
    assert public["fresh"]["source"] == "warehouse" and public["fresh"]["record"]["content"]["text"] == "quokka new"
    everything = await found(include_superseded="true")
    assert set(everything) == {"fresh", "hidden", "lagging"}
    assert everything["hidden"]["source"] == "hotset" and everything["hidden"]["record"]["visibility"] == "private"
    assert everything["lagging"]["record"]["superseded_by"] == "winner"
    # Retrieve re-warms the lagging decision as superseded, and says so.
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "lagging"})
    assert r.json()["source"] == "warehouse" and r.json()["record"]["superseded_by"] == "winner", r.text
    assert stored(rds, tenant, "lagging").superseded_by == "winner"  # type: ignore[union-attr]


async def test_a_public_read_cannot_be_widened_by_a_repeated_or_misspelt_parameter(
    gateway: Gateway, tenant: str
) -> None:
    [private, public] = await seed(gateway, tenant, [
        ev(content={"text": "zebra private"}, channel={"id": "dm", "visibility": "private"}, agent_id="a"),
        ev(content={"text": "zebra public"}, channel={"id": "general", "visibility": "public"}, agent_id="a"),
    ])  # fmt: skip
    retrieve = "/api/v2/memory/retrieve"
    r = await gateway.get(tenant, retrieve, params={"memory_id": private["memory_id"], "channel_visibility": "public"})
    assert_error(r, 404, "not_found")
    r = await gateway.get(tenant, retrieve, params={"memory_id": public["memory_id"], "channel_visibility": "public"})
    assert r.status_code == 200, r.text
    for path, base in (
        ("/api/v2/memory/search", [("q", "zebra")]),
        ("/api/v2/context", [("agent_id", "a")]),
        ("/api/v2/handoffs", [("to_agent", "a")]),
        (retrieve, [("memory_id", private["memory_id"])]),
    ):
        twice = [*base, ("channel_visibility", "public"), ("channel_visibility", "private")]
        err = assert_error(await gateway.get(tenant, path, params=twice), 422, "validation_error")
        assert err["details"] == [
            {"loc": "query.channel_visibility", "msg": "give this parameter once", "type": "repeated"}
        ]
        misspelt = assert_error(await gateway.get(tenant, path, params=[*base, ("Channel_Visibility", "public")]), 422)
        assert misspelt["details"][0]["loc"] == "query.Channel_Visibility", misspelt


async def test_search_finds_words_of_any_script(gateway: Gateway, tenant: str) -> None:
    out = await gateway.store(tenant, ev(content={"text": "Réunion au café: 日本語テキストの確認, привет"}))
    for q in ("café", "日本語", "ПРИВЕТ"):
        r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": q, "fallback": "false"})
        assert [(h["memory_id"], h["source"]) for h in r.json()["results"]] == [(out["memory_id"], "hotset")], (
            q,
            r.text,
        )


async def test_search_ranks_filters_and_respects_visibility(gateway: Gateway, tenant: str) -> None:
    pub = {"id": "general", "visibility": "public"}
    ids = await seed(gateway, tenant, [
        ev(event_id="k1", content={"text": "kafka kafka partitions and kafka consumers"}, channel=pub,
           importance=0.9),
        ev(event_id="k2", content={"text": "a note that mentions kafka once"}, channel=pub, importance=0.1),
        ev(event_id="k3", content={"text": "private kafka secret plans"}),
        ev(event_id="k4", content={"text": "internal kafka runbook"},
           channel={"id": "ops", "visibility": "internal"}),
        ev(event_id="k5", content={"text": "kafka in another session"}, session_id="s2", agent_id="a2"),
        ev(event_id="k6", content={"text": "nothing relevant here"}, session_id="s3"),  # no kafka turn before it
        ev(event_id="d1", type="decision", key="bus", content={"text": "use kafka as the bus"},
           occurred_at="2026-01-01T00:00:00Z"),
        ev(event_id="d2", type="decision", key="bus", content={"text": "use kafka with tansu as the bus"},
           occurred_at="2026-01-02T00:00:00Z"),
    ])  # fmt: skip
    mid = {e: derive_memory_id(tenant, e) for e in ("k1", "k2", "k3", "k4", "k5", "k6", "d1", "d2")}
    assert len(ids) == 8

    async def search(**params: Any) -> dict[str, Any]:
        # Keyword ranking: hybrid (the default once vectors exist) also returns memories near in meaning.
        params = {"q": "kafka", "fallback": "false", "mode": "keyword", **params}
        r = await gateway.get(tenant, "/api/v2/memory/search", params=params)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    everything = await search(limit=20)
    got = [h["memory_id"] for h in everything["results"]]
    assert set(got) == {mid[k] for k in ("k1", "k2", "k3", "k4", "k5", "d2")}  # d1 superseded, k6 no match
    assert got.index(mid["k1"]) < got.index(mid["k2"])  # tf and importance
    assert (
        everything["candidates_examined"] >= 7
        and everything["candidate_pool"] == gateway.settings.search_candidate_pool
    )
    assert all(h["source"] == "hotset" and h["score"] > 0 for h in everything["results"])
    public = await search(channel_visibility="public")
    assert {h["memory_id"] for h in public["results"]} == {mid["k1"], mid["k2"]}
    internal = await search(channel_visibility="internal")
    assert {h["memory_id"] for h in internal["results"]} == {mid["k1"], mid["k2"], mid["k4"]}
    assert [h["memory_id"] for h in (await search(session_id="s2"))["results"]] == [mid["k5"]]
    assert [h["memory_id"] for h in (await search(agent_id="a2"))["results"]] == [mid["k5"]]
    assert [h["memory_id"] for h in (await search(type="decision"))["results"]] == [mid["d2"]]
    with_old = await search(type="decision", include_superseded="true")
    assert {h["memory_id"] for h in with_old["results"]} == {mid["d1"], mid["d2"]}
    assert next(h for h in with_old["results"] if h["memory_id"] == mid["d1"])["record"]["superseded_by"] == mid["d2"]
    assert len((await search(limit=2))["results"]) == 2
    assert (await search(q="the and of"))["results"] == []  # stopwords only


async def test_search_falls_back_to_the_warehouse(gateway: Gateway, warehouse_table: Settings, tenant: str) -> None:
    insert_row(warehouse_table, tenant, "old-1", content={"text": "archived zeppelin notes"}, visibility="public")
    insert_row(warehouse_table, tenant, "old-2", content={"text": "private zeppelin diary"})
    await seed(gateway, tenant, [ev(event_id="z1", content={"text": "fresh zeppelin memory"})])
    r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "zeppelin"})
    body = r.json()
    assert r.status_code == 200 and body["warehouse"] == "used", r.text
    assert {h["memory_id"]: h["source"] for h in body["results"]} == {
        derive_memory_id(tenant, "z1"): "hotset",
        "old-1": "warehouse",
        "old-2": "warehouse",
    }
    pub = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "zeppelin", "channel_visibility": "public"})
    assert [h["memory_id"] for h in pub.json()["results"]] == ["old-1"]
    hotset_only = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "zeppelin", "fallback": "false"})
    assert hotset_only.json()["warehouse"] == "not_needed" and len(hotset_only.json()["results"]) == 1


async def test_search_finds_an_older_memory_holding_every_term_past_the_newest_postings(
    stack: Stack, worker: Proc, tenant: str
) -> None:
    del worker
    async with running(stack.settings(search_candidate_pool=20)) as gw:
        await worker_ready(gw)
        old = [ev(event_id="both", content={"text": "walrus tusk"}, occurred_at="2026-01-01T00:00:00Z")]
        newer = [
            ev(event_id=f"{word}{i}", content={"text": f"{word} number {i}"}, occurred_at=f"2026-02-01T00:{i:02d}:00Z")
            for word in ("walrus", "tusk")
            for i in range(30)
        ]  # fmt: skip
        await seed(gw, tenant, old + newer[:30])
        await seed(gw, tenant, newer[30:])
        r = await gw.get(tenant, "/api/v2/memory/search", params={"q": "walrus tusk", "fallback": "false"})
        body = r.json()
        # 30 newer postings per term and a pool of 20: the newest postings alone would not reach it.
        assert body["results"][0]["memory_id"] == derive_memory_id(tenant, "both"), body
        assert body["candidates_examined"] == 20


async def test_search_prunes_expired_index_members(gateway: Gateway, rds: redis.Redis, tenant: str) -> None:
    out = await seed(gateway, tenant, [ev(content={"text": "ephemeral walrus"})])
    mid = out[0]["memory_id"]
    rds.delete(keys.memory(tenant, mid))  # as if its TTL ran out
    r = await gateway.get(tenant, "/api/v2/memory/search", params={"q": "walrus", "fallback": "false"})
    assert r.json()["results"] == []
    await wait_for(lambda: _no_member(rds, keys.term(tenant, "walrus"), mid))


async def _no_member(rds: redis.Redis, key: str, member: str) -> bool:
    return rds.zscore(key, member) is None


# ---- context -----------------------------------------------------------------------------------


async def test_context_assembles_sections_in_prompt_order(gateway: Gateway, tenant: str) -> None:
    pub = {"id": "general", "visibility": "public"}
    out = await seed(gateway, tenant, [
        ev(event_id="id1", type="identity", key="me", content={"text": "I am the build agent"}, channel=pub),
        ev(event_id="r1", type="rule", key="tone", content={"text": "Never deploy on Fridays"}, channel=pub),
        ev(event_id="d-old", type="decision", key="db", content={"text": "Use MySQL"},
           occurred_at="2026-01-01T00:00:00Z"),
        ev(event_id="d-new", type="decision", key="db", content={"text": "Use Postgres"}, channel=pub,
           occurred_at="2026-01-02T00:00:00Z"),
        ev(event_id="t-open", type="task", key="t1", content={"text": "Write the report", "status": "open"},
           channel=pub),
        ev(event_id="t-done", type="task", key="t2", content={"text": "Ship it", "status": "done"},
           channel=pub),
        ev(event_id="e1", content={"text": "user said hi"}, occurred_at="2026-01-03T00:00:00Z", channel=pub),
        ev(event_id="e2", content={"text": "agent answered"}, occurred_at="2026-01-03T00:01:00Z",
           agent_id="x"),
        ev(event_id="e3", content={"text": "user said hi"}, occurred_at="2026-01-03T00:02:00Z",
           agent_id="y"),
        ev(event_id="e-other", content={"text": "other session"}, session_id="s9"),
    ])  # fmt: skip
    e1 = derive_memory_id(tenant, "e1")
    await seed(
        gateway,
        tenant,
        [ev(event_id="sum", type="summary", content={"text": "They greeted"}, citations=[e1])],
    )
    assert len(out) == 10

    r = await gateway.get(tenant, "/api/v2/context", params={"session_id": "s1", "budget_tokens": "1000"})
    assert r.status_code == 200, r.text
    ctx = r.json()
    items = ctx["items"]
    assert [(i["section"], i["text"]) for i in items] == [
        ("identity", "I am the build agent"),
        ("rules", "Never deploy on Fridays"),
        ("decisions", "Use Postgres"),
        ("tasks", "Write the report"),
        ("summary", "They greeted"),
        ("recent", "agent answered"),
        ("recent", "user said hi"),  # e3 repeats e1's words: deduplicated, the latest kept
    ]
    assert items[-1]["memory_id"] == derive_memory_id(tenant, "e3")
    assert all(i["memory_id"] for i in items) and items[0]["memory_id"] == derive_memory_id(tenant, "id1")
    assert ctx["used_tokens"] == sum(i["tokens"] for i in items) <= 1000
    assert "utf8" in ctx["token_counting"]

    public = (
        await gateway.get(tenant, "/api/v2/context", params={"session_id": "s1", "channel_visibility": "public"})
    ).json()
    assert "Use MySQL" not in {i["text"] for i in public["items"]}
    assert "agent answered" not in {i["text"] for i in public["items"]}  # private
    assert "They greeted" not in {i["text"] for i in public["items"]}

    tiny = (await gateway.get(tenant, "/api/v2/context", params={"session_id": "s1", "budget_tokens": "12"})).json()
    assert tiny["used_tokens"] <= 12 and sum(tiny["omitted"].values()) > 0
    assert ctx["warehouse_consulted"] is False


# ---- handoffs ----------------------------------------------------------------------------------


async def test_the_same_handoff_to_two_agents_reaches_both(gateway: Gateway, tenant: str) -> None:
    body = {"task": "review PR 42", "from_agent": "coder", "session_id": "s1"}
    for agent in ("bob", "carol"):
        r = await gateway.post(tenant, "/api/v2/handoffs", params={"wait": "visible"}, json={**body, "to_agent": agent})
        assert r.status_code == 202 and r.json()["status"] == "visible", r.text
        listed = (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": agent})).json()["handoffs"]
        assert [h["task"] for h in listed] == ["review PR 42"]


async def test_handoff_create_list_ack_exactly_once(gateway: Gateway, tenant: str) -> None:
    r = await gateway.post(
        tenant, "/api/v2/handoffs", params={"wait": "visible"},
        json={"to_agent": "reviewer", "task": "review PR 7", "text": "PR 7 changes the sink",
              "from_agent": "coder"},
    )  # fmt: skip
    assert r.status_code == 202 and r.json()["status"] == "visible", r.text
    hid = r.json()["memory_id"]
    listed = (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "reviewer"})).json()
    assert [(h["handoff_id"], h["task"], h["from_agent"], h["acked"]) for h in listed["handoffs"]] == [
        (hid, "review PR 7", "coder", False)
    ]
    assert (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "someone"})).json()["handoffs"] == []
    assert_error(await gateway.post(tenant, f"/api/v2/handoffs/{hid}/ack", json={"agent_id": "intruder"}), 403)

    acks = await asyncio.gather(*[
        gateway.post(tenant, f"/api/v2/handoffs/{hid}/ack", json={"agent_id": "reviewer"}) for _ in range(5)
    ])  # fmt: skip
    assert sorted(a.status_code for a in acks) == [200, 409, 409, 409, 409], [a.text for a in acks]
    ok = next(a for a in acks if a.status_code == 200).json()
    assert ok["event_id"] == f"ack-{hid}" and ok["acked"] is True
    assert_error(await gateway.post(tenant, f"/api/v2/handoffs/{hid}/ack"), 409, "already_acked")
    assert (await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "reviewer"})).json()["handoffs"] == []

    async def recorded() -> bool:
        rec = (await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": hid})).json()["record"]
        return bool(rec["content"]["status"] == "done" and rec["metadata"]["acked_by"] == "reviewer")

    await wait_for(recorded)
    full = (
        await gateway.get(tenant, "/api/v2/handoffs", params={"to_agent": "reviewer", "include_acked": "true"})
    ).json()
    assert [h["acked"] for h in full["handoffs"]] == [True]
    assert_error(await gateway.post(tenant, "/api/v2/handoffs/unknown/ack"), 404)


# ---- stats -------------------------------------------------------------------------------------


async def test_stats(gateway: Gateway, tenant: str) -> None:
    out = await seed(gateway, tenant, [ev(content={"text": "a"}), ev(type="rule", key="r", content={"text": "b"})])
    await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": out[0]["memory_id"]})
    await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "missing"})

    async def flushed() -> dict[str, Any] | None:
        r = await gateway.get(tenant, "/api/v2/memory/stats")
        assert r.status_code == 200, r.text
        s: dict[str, Any] = r.json()
        return s if s["cache"]["hits"] == 1 and s["cache"]["misses"] == 1 else None

    stats = await wait_for(flushed)
    assert stats["counts_by_type"] == {"event": 1, "rule": 1}
    assert stats["hotset_size"] == 2 and stats["hotset_by_type"] == {"event": 1, "rule": 1}
    assert stats["cache"]["hit_ratio"] == 0.5
    assert stats["counters"]["writes"] == 2
    # Shared figures (offsets, per-partition lag) stay out of a tenant's stats.
    assert stats["consumer_lag"]["status"] in ("caught_up", "behind") and set(stats["consumer_lag"]) == {"status"}
    assert set(stats["sink_lag"]) == {"status"} and stats["dead_letters"] == 0


# ---- the per-turn reads without FastAPI's router (app.gateway.hot) -----------------------------


def _comparable(body: Any) -> Any:
    """A response body without what moves between two identical calls (recency drifts with time)."""
    if isinstance(body, dict):
        return {k: _comparable(v) for k, v in body.items() if k not in ("score", "recency")}
    if isinstance(body, list):
        return [_comparable(v) for v in body]
    return body


async def test_hot_reads_answer_as_the_fastapi_routes_do(
    gateway: Gateway, warehouse_table: Settings, stack: Stack, tenant: str
) -> None:
    assert gateway.settings.gateway_fast_reads  # the session gateway serves them on the hot path
    await seed(gateway, tenant, [
        ev(event_id="p1", content={"text": "kafka partitions rebalance"}, channel={"id": "c", "visibility": "public"}),
        ev(event_id="p2", type="rule", key="r", content={"text": "kafka before redis"}, agent_id="a1"),
        ev(event_id="p3", type="task", key="t", content={"text": "tune kafka", "status": "open"}),
    ])  # fmt: skip
    insert_row(warehouse_table, tenant, "cold", content={"text": "kafka in the warehouse only"})
    p1 = derive_memory_id(tenant, "p1")

    async def sunk() -> bool:  # both paths must see the same warehouse: wait for the sink's flush
        got = [await gateway.services.warehouse.get(tenant, derive_memory_id(tenant, e)) for e in ("p1", "p2", "p3")]
        return all(r is not None for r in got)

    await wait_for(sunk)
    requests: list[tuple[str, Any, dict[str, str]]] = [
        ("/api/v2/memory/retrieve", {"memory_id": p1}, {}),
        ("/api/v2/memory/retrieve", {"memory_id": p1, "channel_visibility": "public"}, {}),
        ("/api/v2/memory/retrieve", [("memory_id", p1), ("channel_visibility", "public")] * 2, {}),  # 422
        (
            "/api/v2/memory/search",
            [("q", "kafka"), ("channel_visibility", "public"), ("channel_visibility", "private")],
            {},
        ),
        ("/api/v2/context", {"session_id": "s1", "channel_visiblity": "public"}, {}),  # 422: misspelt
        ("/api/v2/memory/retrieve", {"memory_id": p1, "memory_type": "event"}, {}),
        ("/api/v2/memory/retrieve", {"memory_id": p1, "memory_type": "rule"}, {}),  # 404
        ("/api/v2/memory/retrieve", {"memory_id": "nowhere"}, {}),  # 404 after the warehouse
        ("/api/v2/memory/retrieve", {"memory_id": ""}, {}),  # 422
        ("/api/v2/memory/retrieve", {"memory_id": p1, "memory_type": "nope", "extra": "ignored"}, {}),
        ("/api/v2/memory/retrieve", {}, {}),  # 422: missing
        ("/api/v2/memory/search", {"q": "kafka"}, {}),
        ("/api/v2/memory/search", {"q": "kafka", "channel_visibility": "public", "limit": "5"}, {}),
        ("/api/v2/memory/search", {"q": "kafka", "type": "rule", "agent_id": "a1", "fallback": "false"}, {}),
        ("/api/v2/memory/search", {"q": "kafka", "include_superseded": "true"}, {}),
        ("/api/v2/memory/search", {"q": "kafka", "limit": "0", "fallback": "1"}, {}),  # 422 twice
        ("/api/v2/memory/search", {"q": "kafka", "limit": "1", "limit_": "x"}, {}),
        ("/api/v2/context", {"session_id": "s1", "budget_tokens": "50"}, {}),
        ("/api/v2/context", {"agent_id": "a1", "channel_visibility": "internal"}, {}),
        ("/api/v2/context", {"budget_tokens": "-3"}, {}),  # 422
        ("/api/v2/context", {}, {"X-API-Key": "msk_bad"}),  # 401: two credentials
    ]
    other = stack.settings(gateway_fast_reads=False)
    async with running(other) as plain:
        assert not plain.settings.gateway_fast_reads
        for path, params, headers in requests:
            hot = await gateway.get(tenant, path, params=params, headers=headers)
            ref = await plain.get(tenant, path, params=params, headers=headers)
            assert (hot.status_code, _comparable(hot.json())) == (ref.status_code, _comparable(ref.json())), (
                path,
                params,
            )
            assert hot.headers["content-type"] == ref.headers["content-type"] == "application/json"
            assert hot.status_code in {200, 401, 404, 422}
        unauthenticated = await gateway.client.get("/api/v2/memory/retrieve", params={"memory_id": p1})
        reference = await plain.client.get("/api/v2/memory/retrieve", params={"memory_id": p1})
        assert unauthenticated.status_code == reference.status_code == 401
        assert unauthenticated.json() == reference.json()
        assert unauthenticated.headers["www-authenticate"] == reference.headers["www-authenticate"]
        # HEAD and other methods are the router's business on both: the same refusal.
        for method in ("POST", "PUT"):
            a = await gateway.client.request(method, "/api/v2/context", headers=gateway.headers(tenant))
            b = await plain.client.request(method, "/api/v2/context", headers=plain.headers(tenant))
            assert a.status_code == b.status_code == 405 and a.json() == b.json()


async def test_a_foreign_hotset_value_reads_as_absent_and_is_rewarmed_over(
    gateway: Gateway, warehouse_table: Settings, rds: redis.Redis, tenant: str
) -> None:
    rds.set(keys.memory(tenant, "junk"), "not a hotset value")  # written by something else
    assert_error(await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "junk"}), 404)
    insert_row(warehouse_table, tenant, "junk", content={"text": "the warehouse knows"})
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "junk"})
    assert r.status_code == 200 and r.json()["source"] == "warehouse", r.text
    assert stored(rds, tenant, "junk").record_json  # type: ignore[union-attr]  # re-warmed over it
    again = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "junk"})
    assert again.json()["source"] == "hotset"


async def test_hot_read_of_a_broken_warehouse_row_is_a_500_in_the_contract_shape(
    gateway: Gateway, warehouse_table: Settings, tenant: str
) -> None:
    insert_row(warehouse_table, tenant, "broken", visibility="nobody")  # not a visibility
    r = await gateway.get(tenant, "/api/v2/memory/retrieve", params={"memory_id": "broken"})
    assert assert_error(r, 500, "internal_error")["message"] == "internal error"
    assert r.headers["x-request-id"]  # the outer middlewares still wrapped the answer
