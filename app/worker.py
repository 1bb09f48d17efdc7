"""`memstream worker`: one Faust app running the ingest agent, the warehouse sink agent and the
embedding agent as services (each a handler on the batch-consumer loop, agents/loop.py)."""

from __future__ import annotations

import asyncio
import gc
import logging

import faust
from prometheus_client import start_http_server

from agents import embed, ingest, warehouse
from app.kafka import AsyncProducer, ensure_topics_with_retry
from app.logs import configure as configure_logging
from app.redis_client import create_redis
from app.settings import Settings
from app.tracking import init_error_tracking
from sinks.hotset import Hotset

log = logging.getLogger(__name__)


AGENTS = ("ingest", "warehouse", "embed")
# A batch allocates dozens of containers an event (models, dicts, tuples) that live until the
# batch is written. With the default first-generation threshold (700 allocations) the cyclic
# collector walks each batch several times and promotes it to older generations before reference
# counting frees it; at 50,000 most of it is freed first. Cyclic garbage waits a little longer.
GC_THRESHOLDS = (50_000, 20, 10)


def create_app_with_agents(settings: Settings, agents: tuple[str, ...] = AGENTS) -> faust.App:
    """One Faust app running the chosen agents: all by default; split them into separate
    processes to scale (or isolate) ingest, the warehouse sink and embedding independently.
    The embedding agent is left out when MEMSTREAM_EMBED_MODEL=none."""
    from app.faust_app import create_app

    app = create_app(settings, settings.worker_group)
    redis = create_redis(settings)
    hotset = Hotset(redis, settings.hotset_ttl_seconds, settings.state_ttl_seconds, settings.feed_max_len)
    producer = AsyncProducer(settings)
    if "ingest" in agents:
        processor = ingest.IngestProcessor(settings, hotset, producer)
        ingest.register(app, processor, settings)
    if "warehouse" in agents:
        warehouse.register(app, settings)
    if "embed" in agents:
        from app.embed import load

        model = load(settings)
        if model is not None:
            embed.register(app, settings, model, hotset, producer)

    @app.service
    class _Resources(faust.Service):
        async def on_stop(self) -> None:
            await asyncio.to_thread(producer.close)
            await redis.aclose()

    return app


def run_worker(settings: Settings, agents: tuple[str, ...] = AGENTS) -> None:
    """Blocking: create topics (waiting for the broker), then run until SIGINT/SIGTERM."""
    configure_logging(settings)
    init_error_tracking(settings, "worker")
    created = asyncio.run(ensure_topics_with_retry(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app_with_agents(settings, agents)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    # Everything loaded so far lives for the whole run: keep the cyclic collector from walking
    # it again and again under the per-event allocations.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    worker.execute_from_commandline()
