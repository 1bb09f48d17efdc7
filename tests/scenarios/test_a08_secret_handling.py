"""A8 Secret Handling: secrets in a memory are redacted on store; the values reach neither the
hotset, the keyword index, the warehouse nor any read."""

from __future__ import annotations

import redis

from sinks.hotset import keys
from tests.support.scenarios import Agent, Seeded, warehouse_count
from tests.support.stack import wait_until

AWS = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "hunter2-Correct-Horse"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


async def test_secrets_are_redacted_before_anything_stores_them(seeded: Seeded, agent: Agent, rds: redis.Redis) -> None:
    session = seeded.scope("secrets")
    text = f"deploy with key {AWS} and password={PASSWORD} token {GITHUB} for the vault rotation"
    [produced] = seeded.produce([seeded.event(session_id=session, content={"text": text})])
    r = await agent.post(
        "/api/v2/memory/store",
        {
            "type": "rule",
            "key": f"{session}-creds",
            "session_id": session,
            "content": {"text": f"rotate vault {GITHUB} weekly"},
        },
        wait="visible",
    )
    assert r.status_code == 202, r.text
    stored_rule = r.json()["memory_id"]

    for memory_id in (produced, stored_rule):
        got = await agent.ok("/api/v2/memory/retrieve", memory_id=memory_id)
        body = got["record"]["content"]["text"]
        assert "[REDACTED:" in body and AWS not in body and PASSWORD not in body and GITHUB not in body
        assert got["record"]["metadata"]["redactions"]
        raw = rds.get(keys.memory(seeded.tenant, memory_id)) or ""
        assert raw and AWS not in raw and PASSWORD not in raw and GITHUB not in raw
    for secret in (AWS, PASSWORD, GITHUB):
        assert not rds.exists(keys.term(seeded.tenant, secret.lower()))
        hits = await agent.ok("/api/v2/memory/search", q=secret, session_id=session, mode="keyword")
        assert hits["results"] == []

    both = "AND session_id = %s AND (TO_VARCHAR(content) ILIKE %s OR TO_VARCHAR(content) ILIKE %s)"
    wait_until(
        lambda: warehouse_count(seeded.settings, seeded.tenant, "AND session_id = %s", [session]) == 2,
        timeout_s=120,
        interval_s=1.0,
    )
    assert warehouse_count(seeded.settings, seeded.tenant, both, [session, f"%{AWS}%", f"%{GITHUB}%"]) == 0
    assert warehouse_count(seeded.settings, seeded.tenant, "AND TO_VARCHAR(content) ILIKE %s", ["%REDACTED%"]) >= 2
