"""The ingest pipeline across real parts: Tansu broker -> Faust worker -> redis-server."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import redis

from app.models import derive_memory_id
from app.settings import Settings
from sinks.hotset import keys
from tests.support.kafka import event, kcat_publish, publish, read_topic, wait_committed
from tests.support.stack import Proc, stored, wait_until


def record(rds: redis.Redis, tenant: str, memory_id: str) -> dict[str, Any] | None:
    value = stored(rds, tenant, memory_id)
    return orjson.loads(value.record_json) if value and not value.deleted else None


def stats(rds: redis.Redis, tenant: str) -> dict[str, int]:
    return {k: int(v) for k, v in rds.hgetall(keys.stats(tenant)).items()}


def wait_writes(rds: redis.Redis, tenant: str, n: int, timeout_s: float = 60) -> dict[str, int]:
    return wait_until(lambda: (s := stats(rds, tenant)) and s.get("writes", 0) >= n and s, timeout_s)


def test_policies_end_to_end(worker: Proc, settings: Settings, rds: redis.Redis, tenant: str) -> None:
    events = [
        event(tenant, "plain", content={"text": "Kafka is the log"}),
        event(tenant, "secret", content={"text": "deploy with AKIAIOSFODNN7EXAMPLE and password=hunter22"}),
        event(tenant, "dup1", content={"text": "Standup at nine"}),
        event(tenant, "dup2", content={"text": "standup   at NINE"}, occurred_at="2026-03-01T10:05:00Z"),
        event(tenant, "forget", content={"text": "do not keep this"}, remember=False),
        event(tenant, "pub", content={"text": "hello all"}, channel={"id": "general", "visibility": "public"}),
        event(
            tenant,
            "d-new",
            type="decision",
            key="db",
            content={"text": "use snowflake"},
            occurred_at="2026-03-03T00:00:00Z",
        ),
        event(
            tenant,
            "d-old",
            type="decision",
            key="db",
            content={"text": "use postgres"},
            occurred_at="2026-03-02T00:00:00Z",
        ),
        event(tenant, "t1", type="task", key="migrate", content={"text": "migrate db", "status": "open"}),
        event(tenant, "bad-type", type="memo"),
    ]
    publish(settings, [*events, b"{not json", event(tenant, "last")])
    s = wait_writes(rds, tenant, 8)
    assert s["dedupes"] == 1 and s["privacy_dropped"] == 1 and s["superseded"] == 1
    assert s["redacted:aws_access_key"] == 1 and s["redacted:credential_assignment"] == 1
    assert s["type:event"] == 5 and s["type:decision"] == 2 and s["type:task"] == 1

    secret = record(rds, tenant, derive_memory_id(tenant, "secret"))
    assert secret is not None
    assert "AKIA" not in secret["content"]["text"] and "hunter22" not in secret["content"]["text"]
    assert secret["metadata"]["redactions"] == {"aws_access_key": 1, "credential_assignment": 1}
    assert record(rds, tenant, derive_memory_id(tenant, "dup2")) is None
    assert record(rds, tenant, derive_memory_id(tenant, "forget")) is None
    assert record(rds, tenant, derive_memory_id(tenant, "pub"))["visibility"] == "public"  # type: ignore[index]

    new_id, old_id = derive_memory_id(tenant, "d-new"), derive_memory_id(tenant, "d-old")
    assert rds.hget(keys.active(tenant), "decision\x1fdb").endswith(new_id)  # type: ignore[union-attr]
    assert stored(rds, tenant, old_id).superseded_by == new_id  # type: ignore[union-attr]
    assert stored(rds, tenant, new_id).superseded_by is None  # type: ignore[union-attr]
    assert rds.zscore(keys.term(tenant, "kafka"), derive_memory_id(tenant, "plain")) is not None
    ttl = rds.ttl(keys.memory(tenant, new_id))
    assert 89 * 86400 < ttl <= 90 * 86400  # decision TTL from settings
    assert 0 < rds.ttl(keys.memory(tenant, derive_memory_id(tenant, "plain"))) <= 2 * 86400

    # Null values (read as b"") are the tombstones that follow deletes: no record to read.
    recs = [orjson.loads(v) for _, v in read_topic(settings, settings.topic_records) if v]
    mine = {r["memory_id"]: r for r in recs if r["tenant_id"] == tenant}
    assert len(mine) == 8 and mine[old_id]["superseded_by"] == new_id
    assert all("hunter22" not in orjson.dumps(r).decode() for r in mine.values())

    dead = [orjson.loads(v) for _, v in read_topic(settings, settings.topic_deadletter)]
    bad_json = [d for d in dead if base64.b64decode(d["original_b64"]) == b"{not json"]
    assert bad_json and bad_json[0]["source"]["topic"] == settings.topic_events
    assert bad_json[0]["source"]["offset"] >= 0 and bad_json[0]["reason"]
    bad_type = [d for d in dead if d.get("tenant_id") == tenant]
    assert len(bad_type) == 1 and "type" in bad_type[0]["reason"]


def test_kcat_producer(worker: Proc, settings: Settings, rds: redis.Redis, tenant: str) -> None:
    lines = [orjson.dumps(event(tenant, f"k{i}", content={"text": f"from kcat {i}"})) for i in range(3)]
    kcat_publish(settings, lines, key=tenant)
    wait_writes(rds, tenant, 3)
    assert record(rds, tenant, derive_memory_id(tenant, "k2"))["content"]["text"] == "from kcat 2"  # type: ignore[index]


def tenant_state(rds: redis.Redis, tenant: str) -> dict[str, Any]:
    """Every key the ingest agent writes for a tenant, with its value (TTLs excluded: they tick).
    The embedding agent's vectors are left out: another consumer group writes them, at its pace."""
    out: dict[str, Any] = {}
    vectors = (keys.vector(tenant, ""), keys.vector_index(tenant), keys.vector_meta(tenant))
    for key in rds.scan_iter(match=f"ms:{{{tenant}}}:*", count=1000):
        if key.startswith(vectors):
            continue
        kind = rds.type(key)
        if kind == "hash":
            out[key] = rds.hgetall(key)
        elif kind == "zset":
            out[key] = rds.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            out[key] = rds.get(key)
    return out


def test_replay_changes_nothing(worker: Proc, settings: Settings, rds: redis.Redis, tenant: str) -> None:
    events = [
        event(tenant, f"r{i}", content={"text": f"replay {i % 7}"}, occurred_at=f"2026-03-01T10:{i:02d}:00Z")
        for i in range(40)
    ]
    events += [
        event(
            tenant,
            f"dec{i}",
            type="decision",
            key="k",
            content={"text": f"decide {i}"},
            occurred_at=f"2026-03-02T00:00:{59 - i:02d}Z",
        )
        for i in range(5)
    ]
    wait_committed(settings, settings.worker_group, publish(settings, events))
    before = tenant_state(rds, tenant)

    ends = publish(settings, events)  # the same events again: a replay
    wait_committed(settings, settings.worker_group, ends)
    after = tenant_state(rds, tenant)
    assert after == before
