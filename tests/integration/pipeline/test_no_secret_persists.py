"""The secrets corpus through every entry point, then a search for each secret everywhere memstream
writes: every topic, every Redis key of the tenants, the warehouse tables, the process logs.

Real services: Tansu, redis-server, fakesnow; the worker and the gateway as subprocesses with
their own topics and log files (DEBUG, so that any line that would carry content is written).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import orjson
import redis
from redis.client import NEVER_DECODE

from app import devstack
from app.kafka import ensure_topics
from app.redact import redact_text
from app.settings import Settings
from app.workload import conversation_events
from sinks.hotset import keys
from tests.support.kafka import event, publish, read_topic
from tests.support.secrets_corpus import corpus
from tests.support.stack import Proc, Stack, wait_until
from tests.support.warehouse import query

GH = "ghp_" + "Zq9X" * 9
PW = "Hunter22-refused-pw"
# Identifiers holding a secret: refused (dead letter / 422), the secret kept nowhere.
REFUSED: list[dict[str, Any]] = [
    {"key": GH, "type": "decision"},
    {"session_id": f"password={PW}"},
    {"agent_id": "AKIAQWERTYUIOP123456"},
    {"channel": {"id": GH, "visibility": "internal"}},
]
REFUSED_SECRETS = [GH, PW, "AKIAQWERTYUIOP123456"]
CHAT = 1500  # real chat around the secrets: a tenant with thousands of writes in all


def dump_redis(rds: redis.Redis, tenant: str) -> str:
    out = []
    for key in rds.scan_iter(match=f"*{{{tenant}}}*", count=1000):
        kind = rds.type(key)
        if kind == "string":
            # Raw bytes: vectors are binary; any text inside still reads as text.
            value: Any = rds.execute_command("GET", key, **{NEVER_DECODE: True}).decode("utf-8", "replace")
        elif kind == "hash":
            value = rds.hgetall(key)
        elif kind == "zset":
            value = rds.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(rds.smembers(key))
        elif kind == "list":
            value = rds.lrange(key, 0, -1)
        elif kind == "stream":  # the change feed carries records too
            value = rds.xrange(key)
        else:
            value = kind
        out.append(f"{key} {value!r}")
    return "\n".join(out)


def topic_text(settings: Settings, topic: str, tenants: set[bytes] | None = None, at_least: int = 1) -> str:
    """Every message of `topic` (only those keyed by one of `tenants`, when given), with the payload
    dead letters keep decoded from base64. Read again until `at_least` messages are there: a
    search through a partial read would prove nothing."""

    def read() -> str | None:
        parts = []
        n = 0
        for key, value in read_topic(settings, topic, timeout_s=30):
            if tenants is not None and not (key or b"").startswith(tuple(tenants)):
                continue
            n += 1
            parts.append(value.decode("utf-8", "replace"))
            if topic.endswith("memory.deadletter"):
                b64 = orjson.loads(value).get("original_b64") or ""
                parts.append(base64.b64decode(b64).decode("utf-8", "replace"))
        return "\n".join(parts) if n >= at_least else None

    text: str = wait_until(read, 120, 1.0)
    return text


def chat(tenant: str, n: int, tag: str) -> list[dict[str, Any]]:
    events = list(conversation_events([tenant], n, tag=tag))
    assert len(events) == n
    return events


def test_no_secret_persists_anywhere(stack: Stack, rds: redis.Redis, tmp_path: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    port = devstack.free_port()
    env = {
        **stack.env,
        "MEMSTREAM_TOPIC_PREFIX": f"rd{suffix}.",
        "MEMSTREAM_WORKER_GROUP": f"rd-g-{suffix}",
        "MEMSTREAM_WAREHOUSE_GROUP": f"rd-gw-{suffix}",
        "MEMSTREAM_LOG_LEVEL": "DEBUG",
        "MEMSTREAM_GATEWAY_HOST": "127.0.0.1",
        "MEMSTREAM_GATEWAY_PORT": str(port),
    }
    settings = stack.settings(**{k.removeprefix("MEMSTREAM_").lower(): v for k, v in env.items()})
    ensure_topics(settings)
    samples = corpus()
    secrets = [s.secret for s in samples] + REFUSED_SECRETS
    standalone = [s.secret for s in samples if s.secret not in redact_text(s.secret)[0]]
    assert len(standalone) >= 30
    via_kafka, via_gateway = f"rk-{suffix}", f"rg-{suffix}"
    worker = Proc(["worker"], env, tmp_path / "worker.log").start()
    gateway = Proc(["gateway"], env, tmp_path / "gateway.log").start()
    try:
        # 1. Straight to memory.events: content, metadata keys and values, invalid events, refused ids.
        events: list[dict[str, Any] | bytes] = list(chat(via_kafka, CHAT, f"rk{suffix}"))
        for i, s in enumerate(samples):
            events.append(event(via_kafka, f"k-{i}", content={"text": s.text}, metadata={"note": s.text}))
            events.append(event(via_kafka, f"kx-{i}", content={"text": s.text}, mood=s.text))  # invalid
        # A secret as a metadata key name: those recognizable on their own (a bare password is not).
        for i, secret in enumerate(standalone):
            events.append(event(via_kafka, f"km-{i}", content={"text": f"see metadata {i}"}, metadata={secret: 1}))
        events.extend(event(via_kafka, f"kr-{i}", **over) for i, over in enumerate(REFUSED))
        events.append(b"not json, but " + samples[0].text.encode())
        publish(settings, events)

        # 2. Through the gateway: store and batch; refused identifiers answer 422.
        headers = {settings.dev_tenant_header: via_gateway}
        base = f"http://127.0.0.1:{port}/api/v2/memory"
        with httpx.Client(headers=headers, timeout=30) as http:
            wait_until(lambda: _up(http, port), timeout_s=60, interval_s=0.2)
            chat_items = [{"type": "event", "content": e["content"]} for e in chat(via_gateway, CHAT, f"rg{suffix}")]
            for start in range(0, len(chat_items), 100):
                r = http.post(f"{base}/batch", json={"items": chat_items[start : start + 100]})
                assert r.status_code == 202, r.text
            for s in samples[::2]:
                r = http.post(
                    f"{base}/store", json={"type": "event", "content": {"text": s.text}, "metadata": {"n": s.text}}
                )
                assert r.status_code == 202, r.text
            items = [{"type": "event", "content": {"text": s.text, "extra": [s.text]}} for s in samples[1::2]]
            r = http.post(f"{base}/batch", json={"items": items})
            assert r.status_code == 202 and r.json()["accepted"] == len(items), r.text
            for over in REFUSED:
                body = {"type": "event", "content": {"text": "x"}, **over}
                r = http.post(f"{base}/store", json=body)
                assert r.status_code == 422, r.text
                assert r.json()["error"]["details"][0]["type"] == "secret_in_identifier"
                assert not any(x in r.text for x in REFUSED_SECRETS)

        # 3. Wait until both tenants are fully processed, in Redis and in the warehouse.
        n_kafka = CHAT + len(samples) + len(standalone)
        n_gateway = CHAT + len(samples)
        # Generous deadlines: some 3,300 events through a DEBUG-logging worker on a shared machine.
        wait_until(lambda: _writes(rds, via_kafka) >= n_kafka and _writes(rds, via_gateway) >= n_gateway, 420, 0.5)
        stored_writes = _stat(rds, via_kafka, "writes") + _stat(rds, via_gateway, "writes")
        wait_until(lambda: _rows(settings, via_kafka) + _rows(settings, via_gateway) >= stored_writes, 300, 1.0)
        wait_until(lambda: _audit_rows(settings, via_gateway) > 0, 120, 1.0)
        dead = topic_text(settings, settings.topic_deadletter, at_least=len(samples) + len(REFUSED) + 1)
    finally:
        worker.stop()
        gateway.stop()

    tenants = {via_kafka.encode(), via_gateway.encode()}
    places = {
        "memory.events (gateway path)": topic_text(settings, settings.topic_events, {via_gateway.encode()}, n_gateway),
        "memory.records": topic_text(settings, settings.topic_records, tenants, stored_writes),
        "memory.deadletter": dead,
        "memory.audit": topic_text(settings, settings.topic_audit),
        "redis": dump_redis(rds, via_kafka) + dump_redis(rds, via_gateway),
        "MEMORY_RECORDS": repr(
            query(settings, "SELECT * FROM MEMORY_RECORDS WHERE tenant_id IN (%s, %s)", (via_kafka, via_gateway))
        ),
        "AUDIT_LOGS": repr(query(settings, "SELECT * FROM AUDIT_LOGS WHERE tenant_id = %s", (via_gateway,))),
        "worker log": (tmp_path / "worker.log").read_text(errors="replace"),
        "gateway log": (tmp_path / "gateway.log").read_text(errors="replace"),
    }
    # The search can fail: the secrets were really written, and every place holds the tenants' data.
    produced = topic_text(settings, settings.topic_events, {via_kafka.encode()}, n_kafka)
    assert [s for s in secrets if s not in produced] == []
    assert places["memory.records"].count("[REDACTED:") >= 2 * len(samples)
    assert places["memory.events (gateway path)"].count("[REDACTED:") >= len(samples)
    assert "contains a secret" in dead and "[REDACTED:" in dead
    assert places["MEMORY_RECORDS"].count("REDACTED") >= 2 * len(samples)
    leaks = {where: [s for s in secrets if s in text] for where, text in places.items()}
    assert {where: found for where, found in leaks.items() if found} == {}


def _up(http: httpx.Client, port: int) -> bool:
    try:
        return http.get(f"http://127.0.0.1:{port}/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _stat(rds: redis.Redis, tenant: str, name: str) -> int:
    return int(rds.hget(keys.stats(tenant), name) or 0)


def _writes(rds: redis.Redis, tenant: str) -> int:
    return _stat(rds, tenant, "writes") + _stat(rds, tenant, "dedupes")


def _rows(settings: Settings, tenant: str) -> int:
    return int(query(settings, "SELECT COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id = %s", (tenant,))[0][0])


def _audit_rows(settings: Settings, tenant: str) -> int:
    return int(query(settings, "SELECT COUNT(*) FROM AUDIT_LOGS WHERE tenant_id = %s", (tenant,))[0][0])
