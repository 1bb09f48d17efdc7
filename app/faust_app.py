"""The worker's Faust application: no Kafka clients of its own (the agents bring their own
confluent-kafka consumers, agents/loop.py); it hosts the agents as services and runs them under
Faust's worker (signals, start-up and shutdown order, a crash stops the process)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import faust

from app.settings import Settings


def create_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app that only runs services: no consumer, producer, tables or web server."""
    # Faust creates a data directory even with in-memory stores; keep it out of the cwd.
    datadir = Path(tempfile.gettempdir()) / "memstream-faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        datadir=str(datadir / "{conf.name}-data"),
        # Never connected to (Kafka is off below); named so nothing falls back to a default host.
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
    )
    app.boot_strategy = app.BootStrategy(app, enable_kafka=False)
    return app
