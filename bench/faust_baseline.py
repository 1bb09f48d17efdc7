"""A Faust app with its own Kafka clients, tuned for the broker here: only the ingest benchmark's
bare-Faust baseline (bench/ingest_baselines.py) uses it. The worker's Faust app has no Kafka
clients (app/faust_app.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.settings import Settings

# Faust hard-codes fetch_max_wait_ms=1500. A broker that holds an empty fetch for the whole wait
# instead of answering when data arrives (Tansu does) then adds up to 1.5 s to every event.
FETCH_MAX_WAIT_MS = 50
_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _worker_consumer_short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


def patch_fetch_wait() -> None:
    """Give Faust's consumers a short fetch wait (for this process)."""
    setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", _worker_consumer_short_fetch_wait)  # noqa: B010


class QuietMonitor(Monitor):
    """Faust's Monitor keeps per-message statistics that the baseline never reads; skipping them
    saves a noticeable share of each message's cost (a fairer baseline)."""

    def on_message_in(self, *args: Any) -> None:
        pass

    def on_stream_event_in(self, *args: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any) -> None:
        pass

    def on_message_out(self, *args: Any) -> None:
        pass

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any) -> None:
        pass

    def track_tp_end_offset(self, *args: Any) -> None:
        pass

    def on_tp_commit(self, *args: Any) -> None:
        pass


def create_kafka_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app on the (plaintext) bench broker, tuned as the field guide measured."""
    patch_fetch_wait()
    datadir = Path(tempfile.gettempdir()) / "memstream-faust-bench"
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        datadir=str(datadir / "{conf.name}-data"),
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.kafka_session_timeout_s / 2,
        broker_heartbeat_interval=settings.kafka_heartbeat_s / 2,
        broker_commit_interval=0.5,
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_acks=-1,
        autodiscover=False,
        Monitor=QuietMonitor,
    )
