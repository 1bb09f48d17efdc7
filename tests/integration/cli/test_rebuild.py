"""Cold-cache recovery: the hotset is lost, `memstream rebuild` refills it from the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from app.cli import main
from app.models import derive_memory_id
from app.settings import Settings
from app.snowflake_conn import connect
from sinks.hotset import keys
from tests.support.gateway import insert_row
from tests.support.kafka import publish
from tests.support.stack import Proc, Stack, stored, wait_until


def warehouse_count(settings: Settings, tenant: str) -> int:
    conn = connect(settings)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id = %s", [tenant])
        return int(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def test_rebuild_restores_memories_indexes_and_supersession(
    worker: Proc,
    stack: Stack,
    settings: Settings,
    rds: redis.Redis,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def at(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    def ev(eid: str, minutes: int, **kw: object) -> dict[str, object]:
        return {
            "schema_version": 1,
            "event_id": eid,
            "tenant_id": tenant,
            "type": "event",
            "session_id": "s",
            "content": {"text": f"cold cache {eid}"},
            "occurred_at": at(minutes),
            **kw,
        }

    publish(
        settings,
        [
            ev("e1", 5),
            ev("e2", 4),
            ev("d-old", 3, type="decision", key="db", content={"text": "use postgres"}),
            ev("d-new", 2, type="decision", key="db", content={"text": "use snowflake"}),
            ev("stale", 3 * 24 * 60),  # an event older than its 2-day hotset TTL
            ev("gone", 1),
            {
                "schema_version": 1,
                "event_id": "del",
                "tenant_id": tenant,
                "op": "delete",
                "memory_id": derive_memory_id(tenant, "gone"),
                "occurred_at": at(0),
            },
        ],
    )
    wait_until(lambda: warehouse_count(settings, tenant) == 6, timeout_s=90)
    before = stored(rds, tenant, derive_memory_id(tenant, "d-new"))
    assert before is not None
    # A row written by something other than the sink: named in the log, never stops the rebuild.
    insert_row(settings, tenant, "m-broken", visibility="nobody", content={"text": "do not log me"})

    for key in rds.scan_iter(match=f"ms:{{{tenant}}}:*", count=1000):
        rds.delete(key)  # the hotset is gone
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    from app.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["rebuild", "--tenant", tenant]) == 0
        out = capsys.readouterr().out
        assert "read 7 warehouse rows; restored 4 memories" in out and "2 deleted or past" in out
        assert "1 unreadable" in out
        assert f"{tenant}/m-broken is not a memory record" in caplog.text
        assert "do not log me" not in caplog.text
        assert main(["rebuild", "--tenant", tenant]) == 0
        assert "restored 0 memories" in capsys.readouterr().out  # a warm hotset is left as it is
    finally:
        get_settings.cache_clear()

    new_id, old_id = derive_memory_id(tenant, "d-new"), derive_memory_id(tenant, "d-old")
    after = stored(rds, tenant, new_id)
    assert after is not None and after.version == before.version
    assert rds.hget(keys.active(tenant), "decision\x1fdb").endswith(new_id)  # type: ignore[union-attr]
    assert stored(rds, tenant, old_id).superseded_by == new_id  # type: ignore[union-attr]
    assert rds.zcard(keys.recent(tenant)) == 4 and rds.zcard(keys.by_session(tenant, "s")) == 4
    assert rds.zscore(keys.term(tenant, "snowflake"), new_id) is not None
    assert not rds.exists(keys.memory(tenant, derive_memory_id(tenant, "stale")))
    assert not rds.exists(keys.memory(tenant, derive_memory_id(tenant, "gone")))
