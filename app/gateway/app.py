"""The ASGI app: `create_app(settings)`. Producer, Redis pool and warehouse pool are created once
per process in the lifespan and shared by every request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.types import ASGIApp

from app.auth import asgi as auth
from app.auth.audit import AuditSink
from app.auth.endpoints import ROUTE_ACTIONS
from app.auth.registry import KeyRegistry
from app.embed import load as load_embedder
from app.gateway import (
    errors,
    routes_admin,
    routes_context,
    routes_handoffs,
    routes_memory,
    routes_ops,
    routes_subscribe,
)
from app.gateway.context import StandingCache
from app.gateway.coverage import Coverage
from app.gateway.deps import Services
from app.gateway.hot import HotReads
from app.gateway.middleware import BodyLimit, RequestMetrics
from app.gateway.reads import HotsetReader
from app.gateway.vectors import VectorCache
from app.gateway.warehouse import Warehouse
from app.gateway.writes import Publisher
from app.kafka import AsyncProducer
from app.redis_client import create_redis
from app.settings import Settings

log = logging.getLogger(__name__)

COUNTER_FLUSH_S = 1.0
# A write request must not hang on a dead broker: fail (503) after this long without an ack.
PRODUCE_TIMEOUT_S = 5.0


def create_app(settings: Settings, *, produce_timeout_s: float = PRODUCE_TIMEOUT_S) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(settings)
        reader = HotsetReader(redis, settings.gateway_doc_cache_size)
        warehouse = Warehouse(settings)
        timeout_ms = int(produce_timeout_s * 1000)
        producer = AsyncProducer(
            settings,
            **{
                "message.timeout.ms": timeout_ms,
                "socket.timeout.ms": min(timeout_ms, 5000),
                # Single events are small: compressing them costs more than it saves, and any
                # consumer of memory.events can read them, whatever codecs it was built with.
                "compression.type": "none",
            },
        )
        embedder = await asyncio.to_thread(load_embedder, settings)
        binary = create_redis(settings, decode=False)
        vectors = (
            VectorCache(binary, embedder.name, embedder.dim, settings.vector_cache_max_bytes) if embedder else None
        )
        app.state.services = Services(
            settings=settings,
            redis=redis,
            reader=reader,
            warehouse=warehouse,
            producer=producer,
            publisher=Publisher(settings, producer, reader),
            embedder=embedder,
            vectors=vectors,
            standing=StandingCache(settings.context_cache_size),
            coverage=Coverage(redis, warehouse, settings.search_coverage_check_s),
        )
        # Security: credentials, rate limits, RBAC; audit entries to memory.audit through the
        # process's one producer.
        audit = AuditSink(producer, settings.topic_audit)
        # API keys: Redis caches them, the warehouse's API_KEYS table is their system of record.
        registry = KeyRegistry(warehouse.query, settings.snowflake_schema)
        app.state.security = auth.Security(settings, redis, ROUTE_ACTIONS, audit, registry)
        feed = routes_subscribe.FeedHub(settings)
        app.state.feed = feed
        stopping = asyncio.Event()
        flusher = asyncio.create_task(_flush_loop(reader, stopping))
        # What start-up loaded lives as long as the process: keep the cyclic collector from
        # walking it on every full collection, which pauses every request in flight.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await feed.close()
            # Stopped by an event, not by cancellation alone: a cancellation that lands inside a
            # Redis call can be absorbed by the client, and shutdown must never wait on it.
            stopping.set()
            await asyncio.wait([flusher], timeout=COUNTER_FLUSH_S + 1)
            flusher.cancel()
            with contextlib.suppress(RedisError, OSError):
                await reader.flush_counts()
            await reader.drain()
            await audit.close()
            await asyncio.to_thread(producer.close, 2.0)
            app.state.kafka_admin = None  # /ready's admin client: its librdkafka handle goes with it
            warehouse.close()
            await redis.aclose()
            await binary.aclose()

    app = _GatewayApp(
        title="memstream gateway",
        version="2.0.0",
        description="Memory for AI agents: writes are events on Kafka, reads come from the Redis "
        "hotset with the Snowflake warehouse behind it. Errors: "
        '`{"error": {"code", "message", "details"}}`.',
        lifespan=lifespan,
        # No slash redirects: Starlette builds their absolute URL from the Host header, so a
        # forged Host would steer the client elsewhere. A path with a stray slash is a 404.
        redirect_slashes=False,
        # memstream exports Prometheus metrics; FastAPI's OpenTelemetry hooks cost per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    errors.install(app)
    auth.install(app)
    for module in (routes_memory, routes_context, routes_subscribe, routes_handoffs, routes_ops, routes_admin):
        app.include_router(module.router)
    # Outermost first. The hot reads are innermost of these, so every other one applies to them.
    app.outer = (
        (RequestMetrics, {}),
        (BodyLimit, {"max_bytes": settings.gateway_max_body_bytes}),
        (auth.AuditMiddleware, {}),
        *([(HotReads, {})] if settings.gateway_fast_reads else []),
    )
    _document_security(app, settings)
    return app


class _GatewayApp(FastAPI):
    """FastAPI with memstream's own middlewares around its whole stack rather than inside it:
    the hot reads (app.gateway.hot) then skip FastAPI's error, telemetry and body-limit layers as
    well as its router. Everything else passes through FastAPI's whole stack."""

    outer: tuple[tuple[Any, dict[str, Any]], ...] = ()

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, kwargs in reversed(self.outer):
            app = cls(app, **kwargs)
        return app


async def _flush_loop(reader: HotsetReader, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), COUNTER_FLUSH_S)
        try:
            await reader.flush_counts()
        except (RedisError, OSError) as exc:
            log.warning("could not flush read counters: %s", exc)


def _document_security(app: FastAPI, settings: Settings) -> None:
    """Describe the credentials in the OpenAPI document (the auth dependency checks them): JWT
    bearer tokens and API keys as security schemes; the development tenant header, only while it
    is enabled, as a header parameter — it asserts a tenant rather than proving one."""
    base_openapi = app.openapi
    schemes = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    header = {
        "name": settings.dev_tenant_header,
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "description": "Development only (MEMSTREAM_DEV_TENANT_HEADER_ENABLED): the caller's tenant id.",
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base_openapi()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
        for path, item in schema.get("paths", {}).items():
            if path.startswith("/api/"):
                for op in item.values():
                    op["security"] = [{name: []} for name in schemes]
                    if settings.dev_tenant_header_enabled:
                        op.setdefault("parameters", []).append(dict(header))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
