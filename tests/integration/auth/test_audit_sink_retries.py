"""The audit sink publishes through the real producer; a broker that stays down costs the batch
only after every retry, and the loss is counted and logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from app.auth.audit import AuditSink, audit_entry
from app.auth.principal import Principal, Role
from app.devstack import free_port
from app.kafka import AsyncProducer
from app.models import AuditEntry
from app.settings import Settings
from tests.support.stack import Stack
from tests.support.warehouse import TopicReader


def entries(tenant: str, n: int) -> list[AuditEntry]:
    who = Principal(tenant_id=tenant, principal_id="key:test", roles=frozenset({Role.WRITER}), kind="api_key")
    now = datetime.now(UTC)
    return [audit_entry(who, "memory.store", status_code=202, latency_ms=1.0, ts=now) for _ in range(n)]


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("memstream_audit_entries_total", {"outcome": name}) or 0.0


async def test_entries_reach_the_audit_topic(settings: Settings, tenant: str) -> None:
    producer = AsyncProducer(settings)
    sink = AuditSink(producer, settings.topic_audit, linger_s=0.01)
    published = outcome("published")
    try:
        batch = entries(tenant, 5)
        for e in batch:
            assert sink.submit(e)
        await sink.close()
        assert outcome("published") - published >= 5  # the counter is per process: others may publish too
    finally:
        producer.close()
    reader = TopicReader(settings, settings.topic_audit)
    try:
        ids = {e.log_id for e in batch}
        reader.until(lambda msgs: ids <= {AuditEntry.model_validate_json(m).log_id for m in msgs})
    finally:
        reader.close()


async def test_a_broker_that_stays_down_drops_the_batch_after_every_retry(
    stack: Stack, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    down = stack.settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = AsyncProducer(down, **{"message.timeout.ms": 300})
    sink = AuditSink(producer, down.topic_audit, retry_s=(0.05, 0.1), linger_s=0.01)
    dropped = outcome("dropped")
    try:
        with caplog.at_level(logging.ERROR, logger="app.auth.audit"):
            for e in entries(tenant, 3):
                assert sink.submit(e)
            await sink.close(timeout_s=20)
    finally:
        producer.close()
    assert outcome("dropped") - dropped >= 3
    assert sink._retrying.statistics["attempt_number"] == 3  # the first try and one per delay
    assert any("dropped 3 entries after retries" in r.getMessage() for r in caplog.records)
