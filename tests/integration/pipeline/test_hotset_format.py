"""The hotset's memory value: the Lua writers held to its layout on a real Redis (the layout itself:
tests/unit/app/test_hotset_codec.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis

from app.gateway.reads import HotsetReader
from app.models import MemoryEvent, MemoryRecord, SourcePosition, derive_memory_id
from app.pipeline import plan, prepare
from app.settings import DEFAULT_TTLS
from sinks.hotset import Hotset, keys
from sinks.hotset import layout as hotset_format
from tests.support.kafka import event
from tests.support.stack import Stack, stored

V1, V2 = f"{1:032d}", f"{2:032d}"


def at(minutes_ago: int) -> str:
    return f"2026-03-01T10:{60 - minutes_ago:02d}:00Z"


@pytest.fixture
async def hotset(stack: Stack) -> AsyncIterator[Hotset]:
    client = stack.async_redis()
    yield Hotset(client, dict(DEFAULT_TTLS), 3600)
    await client.aclose()


async def apply(hotset: Hotset, events: list[dict[str, Any]], first_offset: int = 0) -> None:
    prepared = [
        prepare(MemoryEvent.model_validate_json(orjson.dumps(e)), SourcePosition(topic="t", partition=0, offset=o))
        for o, e in enumerate(events, start=first_offset)
    ]
    await hotset.apply(plan(prepared, await hotset.read_state(prepared), 3600))


async def test_lua_writer_builds_the_layout(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    mid = "mémoire-ü"  # non-ASCII id and text: Lua counts bytes, Python characters
    await apply(hotset, [event(tenant, "e1", memory_id=mid, content={"text": "naïve café"})])
    value = stored(rds, tenant, mid)
    assert value is not None and not value.deleted and value.superseded_by is None
    record = MemoryRecord.from_json(value.record_json)
    assert record.memory_id == mid and record.content == {"text": "naïve café"}
    assert rds.get(keys.memory(tenant, mid)) == hotset_format.encode(value.version, value.record_json)


async def test_supersession_marks_the_older_and_survives_its_new_versions(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    decision = {"type": "decision", "key": "db"}
    await apply(hotset, [event(tenant, "old", occurred_at=at(10), content={"text": "postgres"}, **decision)])
    old_id, new_id = derive_memory_id(tenant, "old"), derive_memory_id(tenant, "new")
    ttl_before = rds.ttl(keys.memory(tenant, old_id))
    await apply(hotset, [event(tenant, "new", occurred_at=at(5), content={"text": "snowflake"}, **decision)], 1)
    older = stored(rds, tenant, old_id)
    assert older is not None and older.superseded_by == new_id and not older.deleted
    assert orjson.loads(older.record_json)["content"] == {"text": "postgres"}  # the record itself untouched
    assert 0 < rds.ttl(keys.memory(tenant, old_id)) <= ttl_before  # KEEPTTL
    # A new version of the superseded memory (same memory_id, newer occurred_at) stays superseded.
    again = event(tenant, "old-v2", memory_id=old_id, occurred_at=at(1), content={"text": "postgres 17"})
    await apply(hotset, [again], 2)
    v2 = stored(rds, tenant, old_id)
    assert v2 is not None and v2.version > older.version and v2.superseded_by == new_id
    assert orjson.loads(v2.record_json)["content"] == {"text": "postgres 17"}


async def test_delete_writes_a_tombstone_an_older_version_cannot_undo(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    mid = derive_memory_id(tenant, "e1")
    await apply(hotset, [event(tenant, "e1", occurred_at=at(10))])
    forget = {"schema_version": 1, "event_id": "del", "op": "delete", "tenant_id": tenant, "memory_id": mid,
              "occurred_at": at(5)}  # fmt: skip
    await apply(hotset, [forget], 1)
    tomb = stored(rds, tenant, mid)
    assert tomb is not None and tomb.deleted
    late = event(tenant, "late", memory_id=mid, occurred_at=at(8), content={"text": "older than the delete"})
    await apply(hotset, [late], 2)
    assert stored(rds, tenant, mid) == tomb
    assert (await HotsetReader(hotset.redis).get(tenant, mid)).deleted


async def test_rewarm_keeps_the_superseded_marker_and_the_version_guard(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    reader = HotsetReader(hotset.redis)
    key = keys.memory(tenant, "m")
    rds.set(key, hotset_format.encode(V1, "{}", superseded_by="m-newer"))
    rec = MemoryRecord.from_json(
        orjson.dumps({"tenant_id": tenant, "memory_id": "m", "version": V2, "event_id": "e", "type": "rule",
                      "content": {"text": "from the warehouse"}, "occurred_at": "2026-11-01T00:00:00Z",
                      "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z"})
    )  # fmt: skip
    assert await reader.rewarm(rec, 60)
    value = stored(rds, tenant, "m")
    assert value is not None and value.version == V2 and value.superseded_by == "m-newer"
    assert 0 < rds.ttl(key) <= 60
    assert not await reader.rewarm(rec, 60)  # the same version again: nothing to do
    slot = await reader.get(tenant, "m")
    assert slot.doc is not None and slot.doc.superseded_by == "m-newer" and slot.doc.text == "from the warehouse"
    [many] = await reader.get_many(tenant, ["m"])
    assert many == slot


async def test_writers_overwrite_a_value_not_in_the_layout(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    mid = derive_memory_id(tenant, "e1")
    rds.set(keys.memory(tenant, mid), "zzzz not ours")  # compares above any version as text
    await apply(hotset, [event(tenant, "e1")])
    value = stored(rds, tenant, mid)
    assert value is not None and MemoryRecord.from_json(value.record_json).memory_id == mid
    # A foreign older memory is left alone when a newer decision supersedes it.
    decision = {"type": "decision", "key": "k"}
    old_id, new_id = derive_memory_id(tenant, "d1"), derive_memory_id(tenant, "d2")
    await apply(hotset, [event(tenant, "d1", occurred_at=at(10), **decision)], 1)
    rds.set(keys.memory(tenant, old_id), "foreign", keepttl=True)
    await apply(hotset, [event(tenant, "d2", occurred_at=at(5), **decision)], 2)
    assert rds.get(keys.memory(tenant, old_id)) == "foreign"
    assert stored(rds, tenant, new_id) is not None
    reader = HotsetReader(hotset.redis)
    assert (await reader.get(tenant, old_id)).version is None  # read as absent


async def test_a_rewarm_of_the_same_version_leaves_the_worker_its_indexing(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    # The gateway read the warehouse and re-warmed a version the worker had not applied yet (its
    # Redis write was being retried): the worker's write must still index it and supersede.
    decision = {"type": "decision", "key": "db"}
    await apply(hotset, [event(tenant, "old", occurred_at=at(10), content={"text": "postgres"}, **decision)])
    new = event(tenant, "new", occurred_at=at(5), content={"text": "snowflake"}, **decision)
    pos = SourcePosition(topic="t", partition=0, offset=1)
    record = prepare(MemoryEvent.model_validate_json(orjson.dumps(new)), pos).record
    assert await HotsetReader(hotset.redis).rewarm(record, 60)
    old_id, new_id = derive_memory_id(tenant, "old"), derive_memory_id(tenant, "new")
    assert rds.zscore(keys.recent(tenant), new_id) is None
    await apply(hotset, [new], 1)
    assert rds.zscore(keys.recent(tenant), new_id) is not None
    assert rds.zscore(keys.term(tenant, "snowflake"), new_id) is not None
    assert rds.hget(keys.active(tenant), keys.active_field("decision", "db")) == f"{record.version}|{new_id}"
    older = stored(rds, tenant, old_id)
    assert older is not None and older.superseded_by == new_id
    assert stored(rds, tenant, new_id).version == record.version  # type: ignore[union-attr]


async def test_rewarm_marks_a_memory_superseded_by_the_active_one_the_warehouse_does_not_know(
    hotset: Hotset, rds: redis.Redis, tenant: str
) -> None:
    decision = {"type": "decision", "key": "db"}
    await apply(hotset, [event(tenant, "new", occurred_at=at(5), content={"text": "snowflake"}, **decision)])
    new_id = derive_memory_id(tenant, "new")
    # The older decision expired from the hotset before the newer one arrived, and the warehouse
    # has not flushed the supersession yet: it still says superseded_by null.
    old = event(tenant, "old", occurred_at=at(10), content={"text": "postgres"}, **decision)
    pos = SourcePosition(topic="t", partition=0, offset=0)
    record = prepare(MemoryEvent.model_validate_json(orjson.dumps(old)), pos).record
    assert record.superseded_by is None
    reader = HotsetReader(hotset.redis)
    rewarmed = await reader.rewarm(record, 60)
    assert rewarmed is not None and rewarmed.superseded_by == new_id
    assert stored(rds, tenant, record.memory_id).superseded_by == new_id  # type: ignore[union-attr]
    # Its own active entry, or an older one, does not supersede it.
    again = event(tenant, "newest", occurred_at=at(1), content={"text": "duckdb"}, **decision)
    rec3 = prepare(MemoryEvent.model_validate_json(orjson.dumps(again)), pos).record
    rds.hset(keys.active(tenant), keys.active_field("decision", "db"), f"{rec3.version}|{rec3.memory_id}")
    rewarmed3 = await reader.rewarm(rec3, 60)
    assert rewarmed3 is not None and rewarmed3.superseded_by is None


async def test_prune_spares_a_member_whose_memory_came_back(hotset: Hotset, rds: redis.Redis, tenant: str) -> None:
    index = keys.recent(tenant)
    rds.zadd(index, {"gone": 1, "dead": 2, "back": 3, "foreign": 4})
    rds.set(keys.memory(tenant, "dead"), hotset_format.encode(V1, "{}", deleted=True))
    rds.set(keys.memory(tenant, "foreign"), "not ours")
    # A read saw all four absent or deleted; the worker wrote "back" again before the prune ran.
    rds.set(keys.memory(tenant, "back"), hotset_format.encode(V2, '{"occurred_at":"2026-03-01T10:00:00Z"}'))
    reader = HotsetReader(hotset.redis)
    reader.prune(tenant, {index: ["gone", "dead", "back", "foreign"]})
    await reader.drain()
    assert rds.zrange(index, 0, -1) == ["back"]
