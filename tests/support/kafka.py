"""Kafka helpers for tests: publish with confluent-kafka or kcat, read a topic back."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.kafka import caught_up, publish_sync
from app.settings import Settings
from tests.support.stack import wait_until


def event(tenant: str, eid: str, **over: Any) -> dict[str, Any]:
    """A valid memory event for tests; keyword arguments override fields."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": eid,
        "tenant_id": tenant,
        "type": "event",
        "session_id": "s1",
        "content": {"text": f"text of {eid}"},
        "occurred_at": "2026-03-01T10:00:00Z",
    }
    body.update(over)
    return body


def publish(settings: Settings, events: Iterable[dict[str, Any] | bytes], topic: str | None = None) -> dict[int, int]:
    """Publish (acks=all); returns the end offset per partition, from the delivery reports."""
    msgs: list[tuple[bytes | None, bytes]] = []
    for e in events:
        if isinstance(e, bytes):
            msgs.append((b"raw", e))
        else:
            msgs.append((str(e.get("tenant_id", "")).encode(), orjson.dumps(e)))
    return publish_sync(settings, msgs, topic or settings.topic_events)


IDLE_S = 0.5  # read_topic: how long a topic read past its watermarks must stay quiet


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[tuple[bytes | None, bytes]]:
    """Every message currently in `topic` (all partitions, from the start)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            ends[tp.partition] = high
        consumer.assign(parts)
        out: list[tuple[bytes | None, bytes]] = []
        done = {p for p, h in ends.items() if h == 0}
        deadline = time.monotonic() + timeout_s
        # Tansu can report a log end below what the partition holds: past the watermarks, read on
        # until the topic has been quiet for IDLE_S.
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, timeout=0.2)
            for m in msgs:
                if m.error():
                    continue
                out.append((m.key(), m.value() or b""))
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
            if len(done) < len(ends):
                continue
            now = time.monotonic()
            if msgs:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= IDLE_S:
                break
        return out
    finally:
        consumer.close()


def kcat_env() -> dict[str, str]:
    """Debian's kcat needs the newer librdkafka from the confluent-kafka wheel to talk to Tansu."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    lib = next(libs.glob("librdkafka-*.so.1"))
    d = Path(tempfile.mkdtemp(prefix="kcat-lib-"))
    (d / "librdkafka.so.1").symlink_to(lib)
    return {**os.environ, "LD_LIBRARY_PATH": str(d)}


def kcat_publish(settings: Settings, lines: list[bytes], key: str) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (apt-get install kcat); .ci/run installs it"
    subprocess.run(
        [kcat, "-P", "-b", settings.kafka_bootstrap, "-t", settings.topic_events, "-k", key, "-X", "acks=all"],
        input=b"\n".join(lines) + b"\n",
        env=kcat_env(),
        check=True,
        timeout=30,
    )


def wait_committed(settings: Settings, group: str, ends: dict[int, int], timeout_s: float = 60.0) -> None:
    """Poll until `group` has committed past `ends` (as returned by `publish`) on the events topic."""
    wait_until(lambda: caught_up(settings, group, settings.topic_events, ends), timeout_s, interval_s=0.1)
