"""Topic declarations. Every topic is created up front with its partition count: a broker that
auto-creates on first use picks its own count, and Faust then dies with PartitionsMismatch."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


def declared_topics(settings: Settings) -> list[TopicSpec]:
    p, r = settings.topic_partitions, settings.topic_replication
    week = str(7 * 86400 * 1000)
    return [
        # memory.events is the log of record for replays: keep it (retention -1 = forever).
        TopicSpec(settings.topic_events, p, r, {"retention.ms": "-1"}),
        TopicSpec(settings.topic_records, p, r, {"retention.ms": "-1"}),
        TopicSpec(settings.topic_deadletter, p, r, {"retention.ms": str(30 * 86400 * 1000)}),
        TopicSpec(settings.topic_audit, p, r, {"retention.ms": week}),
    ]
