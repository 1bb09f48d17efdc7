"""`memstream worker`: one Faust app running the ingest agent and the warehouse sink agents."""

from __future__ import annotations

import asyncio
import logging

import faust
from prometheus_client import start_http_server

from agents import ingest, warehouse
from app.kafka import AsyncProducer, ensure_topics_with_retry
from app.redis_client import create_redis
from app.settings import Settings
from sinks.hotset import Hotset

log = logging.getLogger(__name__)


def build_worker_app(settings: Settings) -> faust.App:
    app = create_app_with_agents(settings)
    return app


def create_app_with_agents(settings: Settings) -> faust.App:
    from app.faust_app import create_app

    app = create_app(settings, settings.worker_group)
    redis = create_redis(settings)
    hotset = Hotset(redis, settings.hotset_ttl_seconds, settings.state_ttl_seconds)
    producer = AsyncProducer(settings)
    processor = ingest.IngestProcessor(settings, hotset, producer)
    ingest.register(app, processor, settings)
    sinks = warehouse.register_all(app, settings, producer)

    @app.service
    class _Resources(faust.Service):  # type: ignore[misc]
        async def on_stop(self) -> None:
            for sink in sinks:
                sink.close()
            await asyncio.to_thread(producer.close)
            await redis.aclose()

    return app


def run_worker(settings: Settings) -> None:
    """Blocking: create topics (waiting for the broker), then run until SIGINT/SIGTERM."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    created = asyncio.run(ensure_topics_with_retry(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_worker_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.execute_from_commandline()
