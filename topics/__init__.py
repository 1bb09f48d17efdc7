"""Topic declarations. Every topic is created up front with its partition count: a broker that
auto-creates on first use picks its own count, and Faust then dies with PartitionsMismatch.

Retention (docs/contract.md §1, docs/security.md): memory.events is an input queue with bounded
retention; memory.records is the replayable log, compacted by key (`tenant/memory_id`) so that a
delete's null-value tombstone removes the memory's earlier records; memory.deadletter and
memory.audit are bounded. The configs apply when memstream creates a topic; an existing topic
keeps its own (ensure_topics never alters one).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


def _ms(seconds: int) -> str:
    return str(seconds * 1000)


def declared_topics(settings: Settings) -> list[TopicSpec]:
    s = settings
    p, r = s.topic_partitions, s.topic_replication
    week = 7 * 86400
    return [
        TopicSpec(s.topic_events, p, r, {"cleanup.policy": "delete", "retention.ms": _ms(s.events_retention_seconds)}),
        # Compaction keeps the newest record per key forever; a tombstone (null value) removes the
        # key after delete.retention.ms. Brokers that store the policy but never compact (Tansu)
        # keep everything: see docs/contract.md §1.
        TopicSpec(
            s.topic_records,
            p,
            r,
            {
                "cleanup.policy": "compact",
                "retention.ms": "-1",
                "delete.retention.ms": _ms(s.records_tombstone_retention_seconds),
            },
        ),
        TopicSpec(
            s.topic_deadletter,
            p,
            r,
            {"cleanup.policy": "delete", "retention.ms": _ms(s.deadletter_retention_seconds)},
        ),
        TopicSpec(s.topic_audit, p, r, {"cleanup.policy": "delete", "retention.ms": _ms(week)}),
        # The embedding agent's vectors on their way to MEMORY_VECTORS (the warehouse agent).
        TopicSpec(s.topic_vectors, p, r, {"cleanup.policy": "delete", "retention.ms": _ms(week)}),
    ]
