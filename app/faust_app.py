"""The Faust application from settings. The worker runs its agents as services of it with
`kafka=False` (they bring their own confluent-kafka clients); with Kafka on, it is tuned for the
broker here (used by the ingest benchmark's bare Faust agent, and by any Faust stream agent)."""

from __future__ import annotations

import ssl
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


setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", _worker_consumer_short_fetch_wait)  # noqa: B010


class QuietMonitor(Monitor):
    """Faust's Monitor keeps per-message statistics that nothing here reads (memstream exports its
    own Prometheus metrics); skipping them saves a noticeable share of each message's cost."""

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


def create_app(settings: Settings, app_id: str, *, kafka: bool = True) -> faust.App:
    """A Faust app on the configured broker. `kafka=False`: no Faust consumer or producer, the
    app only runs services (the worker's agents bring their own confluent-kafka clients)."""
    credentials: faust.SASLCredentials | faust.SSLCredentials | None = None
    if settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        ctx = (
            ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
            if "SSL" in (settings.kafka_security_protocol)
            else None
        )
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=ctx,
        )
    elif settings.kafka_security_protocol == "SSL":
        credentials = faust.SSLCredentials(ssl.create_default_context(cafile=settings.kafka_ssl_cafile))
    # Faust creates a data directory even with in-memory stores; keep it out of the cwd.
    datadir = Path(tempfile.gettempdir()) / "memstream-faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        datadir=str(datadir / "{conf.name}-data"),
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=credentials,
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
    if not kafka:
        app.boot_strategy = app.BootStrategy(app, enable_kafka=False)
    return app
