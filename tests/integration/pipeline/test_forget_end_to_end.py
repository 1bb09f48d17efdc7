"""Forgetting across every store on the real stack (Tansu, worker, redis-server, fakesnow, the
gateway in-process): DELETE, erasure and export by subject, and replays that must not undo them."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.auth.principal import Role
from app.kafka import caught_up, publish_sync
from app.models import derive_memory_id
from app.settings import Settings
from sinks.hotset import keys
from tests.support.gateway import Gateway, insert_row
from tests.support.kafka import event, publish, wait_committed
from tests.support.stack import Stack, stored, wait_until
from tests.support.warehouse import query


class KeyedReader:
    """(key, value) of a topic from the beginning; a null value stays None."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"test-keyed-{time.monotonic_ns()}",
                "enable.auto.commit": False,
            }
        )
        md = self.consumer.list_topics(topic, timeout=10)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        self.messages: list[tuple[bytes | None, bytes | None]] = []

    def until(self, predicate: Any, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.consumer.consume(1000, timeout=0.2):
                if m.error() is None:
                    self.messages.append((m.key(), m.value()))
            result = predicate(self.messages)
            if result:
                return result
        raise AssertionError(f"condition not met within {timeout_s}s ({len(self.messages)} messages read)")

    def close(self) -> None:
        self.consumer.close()


def warehouse_row(settings: Settings, tenant: str, memory_id: str) -> dict[str, Any] | None:
    names = ["content", "metadata", "user_id", "session_id", "key", "deleted", "event_id", "version"]
    got = query(
        settings,
        "SELECT content, metadata, user_id, session_id, key, deleted_at IS NOT NULL, event_id, version::STRING "
        "FROM MEMORY_RECORDS WHERE tenant_id = %s AND id = %s",
        (tenant, memory_id),
    )
    if not got:
        return None
    row = dict(zip(names, got[0], strict=True))
    for n in ("content", "metadata"):
        row[n] = orjson.loads(str(row[n])) if row[n] is not None else None
    return row


def postings_of(rds: redis.Redis, tenant: str, memory_id: str, terms: list[str]) -> list[str]:
    index_keys = [keys.recent(tenant), keys.by_session(tenant, "s-alice"), keys.by_agent(tenant, "a-alice")]
    index_keys += [keys.term(tenant, t) for t in terms]
    return [k for k in index_keys if rds.zscore(k, memory_id) is not None]


async def test_delete_forgets_in_every_store_and_a_replay_does_not_undo_it(
    gateway: Gateway, settings: Settings, rds: redis.Redis, tenant: str
) -> None:
    body = {
        "type": "decision",
        "key": "pet",
        "user_id": "u-alice",
        "agent_id": "a-alice",
        "session_id": "s-alice",
        "content": {"text": "Alice keeps a zebra named Quokka"},
        "metadata": {"email": "alice@example.com"},
    }
    out = await gateway.store(tenant, body)
    mid = out["memory_id"]
    terms = ["zebra", "quokka", "alice"]
    assert postings_of(rds, tenant, mid, terms)  # indexed before the delete
    wait_until(lambda: warehouse_row(settings, tenant, mid), 120)
    wait_until(lambda: (v := vector_row(settings, tenant, mid)) and v[1] is not None, 120)  # embedded

    r = await gateway.delete(tenant, f"/api/v2/memory/{mid}", params={"wait": "visible"})
    assert r.status_code == 202 and r.json()["status"] == "visible", r.text
    delete_version = r.json()["version"]

    # Hotset: a tombstone (ids, version, deleted flag), out of every index and posting.
    value = stored(rds, tenant, mid)
    assert value is not None and value.deleted and value.version == delete_version
    tomb = orjson.loads(value.record_json)
    assert tomb["content"] is None and tomb["metadata"] == {} and tomb["user_id"] is None
    assert not any(s in value.record_json.lower() for s in ("zebra", "alice", "quokka"))
    assert postings_of(rds, tenant, mid, terms) == []
    # The dedupe entry went with it: the same text in the same scope is stored again.
    again = await gateway.store(tenant, body)
    assert again["status"] == "visible" and again["memory_id"] != mid

    # memory.records: the record, the delete record, then a null-value tombstone, same key.
    reader = KeyedReader(settings, settings.topic_records)
    key = f"{tenant}/{mid}".encode()
    try:
        mine = reader.until(lambda ms: (got := [v for k, v in ms if k == key]) and len(got) >= 3 and got)
    finally:
        reader.close()
    assert len(mine) == 3 and mine[2] is None
    assert b"Quokka" in (mine[0] or b"") and b"Quokka" not in (mine[1] or b"") and b"alice" not in (mine[1] or b"")

    # Warehouse: a tombstone row with the delete's version and event id; content and scopes gone.
    row = wait_until(lambda: (w := warehouse_row(settings, tenant, mid)) and w["deleted"] and w, 120)
    assert row["content"] is None and row["metadata"] == {} and row["key"] is None
    assert (row["user_id"], row["session_id"]) == (None, None)
    assert row["version"].zfill(32) == delete_version
    # MEMORY_VECTORS: the embedding agent leaves the row at the delete's version, without a vector.
    wait_until(lambda: vector_row(settings, tenant, mid) == (delete_version, None), 120)
    assert not rds.exists(keys.vector(tenant, mid))

    # Replays: the original record on memory.records (the warehouse sink) and the original event
    # on memory.events (the worker) change nothing.
    ends = publish_sync(settings, [(key, mine[0] or b"")], settings.topic_records)
    wait_until(lambda: caught_up(settings, settings.warehouse_group, settings.topic_records, ends), 120, 0.2)
    wait_until(lambda: caught_up(settings, settings.embed_group, settings.topic_records, ends), 120, 0.2)
    assert vector_row(settings, tenant, mid) == (delete_version, None)
    assert not rds.exists(keys.vector(tenant, mid))
    original = event(tenant, out["event_id"], **{k: v for k, v in body.items()})
    original["occurred_at"] = orjson.loads(mine[0] or b"{}")["occurred_at"]
    wait_committed(settings, settings.worker_group, publish(settings, [original]), 120)
    assert warehouse_row(settings, tenant, mid) == row
    after = stored(rds, tenant, mid)
    assert after is not None and after.deleted and after.version == delete_version
    assert postings_of(rds, tenant, mid, terms) == []


def vector_row(settings: Settings, tenant: str, mid: str) -> tuple[str, str | None] | None:
    """(version, vector) of the memory's MEMORY_VECTORS row, or None."""
    sql = "SELECT version::STRING, vector FROM MEMORY_VECTORS WHERE tenant_id = %s AND id = %s"
    got = query(settings, sql, (tenant, mid))
    return (str(got[0][0]).split(".")[0].zfill(32), got[0][1]) if got else None


def live_vectors(settings: Settings, tenant: str, ids: list[str]) -> int:
    marks = ", ".join(["%s"] * len(ids))
    sql = f"SELECT COUNT(*) FROM MEMORY_VECTORS WHERE tenant_id = %s AND vector IS NOT NULL AND id IN ({marks})"
    return int(query(settings, sql, (tenant, *ids))[0][0])


USERS = 10
PER_USER = 300
COLD = 40  # rows of the subject only in the warehouse (past their hotset TTL, say)


def texts(user: int, i: int) -> str:
    return f"note {i} of user {user} about topic{i % 17}"


async def test_erasure_and_export_by_user_on_a_tenant_with_thousands_of_memories(
    gateway: Gateway, stack: Stack, settings: Settings, rds: redis.Redis, tenant: str
) -> None:
    events = [
        event(
            tenant,
            f"u{u}-{i}",
            user_id=f"user-{u}",
            agent_id=f"agent-{i % 3}",
            content={"text": texts(u, i)},
            metadata={"n": i},
            occurred_at=f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}Z",
        )
        for u in range(USERS)
        for i in range(PER_USER)
    ]
    publish(settings, events)
    subject, other = "user-3", "user-4"
    for i in range(COLD):
        insert_row(settings, tenant, f"cold-{i}", user_id=subject, content={"text": f"cold note {i}"})
    total = USERS * PER_USER

    def live_rows(user: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id = %s AND deleted_at IS NULL"
        params: tuple[Any, ...] = (tenant,)
        if user is not None:
            sql, params = sql + " AND user_id = %s", (tenant, user)
        return int(query(settings, sql, params)[0][0])

    wait_until(lambda: int(rds.hget(keys.stats(tenant), "writes") or 0) >= total, 300, 0.5)
    wait_until(lambda: live_rows() >= total + COLD, 300, 0.5)
    subject_ids = [derive_memory_id(tenant, f"u3-{i}") for i in range(PER_USER)]
    survivor_ids = [derive_memory_id(tenant, f"u4-{i}") for i in range(PER_USER)]
    wait_until(lambda: live_vectors(settings, tenant, subject_ids + survivor_ids) == 2 * PER_USER, 300, 0.5)

    # A non-admin credential may do neither.
    api_key, _ = await gateway.app.state.security.authenticator.api_keys.create(tenant, frozenset({Role.WRITER}), None)
    subject_body = {"subject_type": "user_id", "subject_id": subject}
    for path in ("/api/v2/admin/export", "/api/v2/admin/erasure"):
        r = await gateway.client.post(path, json=subject_body, headers={"X-API-Key": api_key})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = await gateway.post(tenant, "/api/v2/admin/erasure", json={"subject_type": "email", "subject_id": "x"})
    assert r.status_code == 422 and "error" in r.json()

    # Export: the warehouse merged with the hotset, only the subject's memories.
    r = await gateway.post(tenant, "/api/v2/admin/export", json=subject_body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert len(lines) == PER_USER + COLD
    assert {line["record"]["user_id"] for line in lines} == {subject}
    sources = {line["source"] for line in lines}
    assert sources == {"hotset", "warehouse"}  # the cold rows come from the warehouse only

    # Erasure through the gateway.
    r = await gateway.post(tenant, "/api/v2/admin/erasure", json={**subject_body, "wait_s": 60})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["memories"] == PER_USER + COLD
    assert report["stores"]["hotset"]["found"] == PER_USER
    assert report["stores"]["hotset"]["tombstones_confirmed"] == PER_USER + COLD
    assert report["stores"]["warehouse"]["found"] == PER_USER + COLD
    assert report["stores"]["warehouse"]["rows_erased"] == PER_USER + COLD
    assert report["stores"]["warehouse"]["vectors_erased"] == PER_USER  # the cold rows had none
    assert live_vectors(settings, tenant, subject_ids) == 0
    assert live_vectors(settings, tenant, survivor_ids) == PER_USER
    assert report["stores"]["memory.records"]["tombstones"] == PER_USER + COLD

    # Only the subject's memories went, from every store.
    assert live_rows(subject) == 0
    assert live_rows() == total - PER_USER
    content_left = query(
        settings,
        "SELECT COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id = %s AND content::STRING ILIKE %s",
        (tenant, "%user 3 %"),
    )[0][0]
    assert int(content_left) == 0
    hot_ids = [derive_memory_id(tenant, f"u3-{i}") for i in range(PER_USER)]
    assert all(v is not None and v.deleted for v in (stored(rds, tenant, m) for m in hot_ids))
    survivors = [derive_memory_id(tenant, f"u4-{i}") for i in range(PER_USER)]
    assert all(v is not None and not v.deleted for v in (stored(rds, tenant, m) for m in survivors))
    assert rds.zscore(keys.term(tenant, "topic5"), hot_ids[5]) is None
    assert rds.zscore(keys.term(tenant, "topic5"), survivors[5]) is not None

    # Idempotent: a second run finds nothing and publishes nothing.
    r = await gateway.post(tenant, "/api/v2/admin/erasure", json=subject_body)
    assert r.status_code == 200 and r.json()["memories"] == 0
    r = await gateway.post(tenant, "/api/v2/admin/export", json=subject_body)
    assert r.status_code == 200 and r.content == b""

    # memory.records holds a null-value tombstone for each erased memory.
    reader = KeyedReader(settings, settings.topic_records)
    erased_keys = {f"{tenant}/{m}".encode() for m in [*hot_ids, *(f"cold-{i}" for i in range(COLD))]}
    try:
        reader.until(lambda ms: erased_keys <= {k for k, v in ms if v is None}, 120)
    finally:
        reader.close()

    # The audit entry carries counts, never the subject id.
    audit = KeyedReader(settings, settings.topic_audit)
    try:
        entries = audit.until(
            lambda ms: [
                e for k, v in ms if k == tenant.encode() and v and (e := orjson.loads(v))["action"] == "admin.erasure"
            ],
            60,
        )
    finally:
        audit.close()
    assert any(e["details"].get("count") == PER_USER + COLD for e in entries)
    assert all(subject not in orjson.dumps(e).decode() for e in entries)

    # The CLI: export, then erase another user.
    env = stack.env
    exported = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", "--tenant", tenant, "--user-id", other],
        env=env,
        capture_output=True,
        timeout=300,
        check=True,
    )
    assert len(exported.stdout.splitlines()) == PER_USER
    erased = subprocess.run(
        [sys.executable, "-m", "app.cli", "erase", "--tenant", tenant, "--user-id", other, "--wait", "60"],
        env=env,
        capture_output=True,
        timeout=300,
        check=True,
    )
    cli_report = orjson.loads(erased.stdout)
    assert cli_report["memories"] == PER_USER and cli_report["stores"]["hotset"]["tombstones_confirmed"] == PER_USER
    assert live_rows(other) == 0 and live_rows() == total - 2 * PER_USER
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "erase", "--tenant", tenant, "--user-id", "a", "--agent-id", "b"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 2 and b"exactly one" in bad.stderr
