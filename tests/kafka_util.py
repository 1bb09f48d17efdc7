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
from confluent_kafka import Consumer, Producer, TopicPartition

from app.settings import Settings


def publish(settings: Settings, events: Iterable[dict[str, Any] | bytes], topic: str | None = None) -> int:
    producer = Producer({**settings.kafka_client_config(), "acks": "all", "linger.ms": 5})
    n = 0
    for e in events:
        if isinstance(e, bytes):
            value, key = e, b"raw"
        else:
            value, key = orjson.dumps(e), str(e.get("tenant_id", "")).encode()
        producer.produce(topic or settings.topic_events, value=value, key=key)
        n += 1
        if n % 10000 == 0:
            producer.flush()
    assert producer.flush(30) == 0, "broker did not acknowledge every message"
    return n


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[tuple[bytes | None, bytes]]:
    """Every message currently in `topic` (all partitions, from the start)."""
    consumer = Consumer({
        **settings.kafka_client_config(),
        "group.id": f"test-reader-{time.monotonic_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
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
        while len(done) < len(ends) and time.monotonic() < deadline:
            msgs = consumer.consume(1000, timeout=0.2)
            for m in msgs:
                if m.error():
                    continue
                out.append((m.key(), m.value() or b""))
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
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


def wait_committed(settings: Settings, group: str, topic: str, timeout_s: float = 60.0) -> None:
    """Poll until `group` has committed every partition of `topic` up to its current end."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        deadline = time.monotonic() + timeout_s
        last: dict[int, int] = {}
        while time.monotonic() < deadline:
            committed = consumer.committed(parts, timeout=10)
            last = {tp.partition: tp.offset for tp in committed}
            if all(last[p] >= end for p, end in ends.items() if end > 0):
                return
            time.sleep(0.1)
        raise AssertionError(f"group {group} committed {last}, topic ends at {ends}")
    finally:
        consumer.close()
