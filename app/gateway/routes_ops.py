"""/health (liveness, no dependency calls), /ready (each dependency), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

from app.gateway.deps import Services, services
from app.gateway.errors import error_response, responses
from app.gateway.routes_memory import json_response
from app.gateway.schemas import HealthResult, ReadyResult
from app.gateway.warehouse import WarehouseUnavailable
from app.metrics import DEPENDENCY_UP
from sinks.hotset import keys

router = APIRouter(tags=["ops"])
CHECK_TIMEOUT_S = 2.0


@router.get("/health", response_model=HealthResult)
async def health() -> Response:
    """Liveness: the process answers. Calls no dependency."""
    return json_response({"status": "ok"})


async def _check(name: str, probe: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except (RedisError, KafkaException, WarehouseUnavailable, OSError, TimeoutError) as exc:
        DEPENDENCY_UP.labels(name).set(0)
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    DEPENDENCY_UP.labels(name).set(1)
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


def _admin(request: Request, svc: Services) -> AdminClient:
    admin: AdminClient | None = getattr(request.app.state, "kafka_admin", None)
    if admin is None:
        admin = AdminClient({**svc.settings.kafka_client_config(), "socket.timeout.ms": 2000})
        request.app.state.kafka_admin = admin
    return admin


@router.get("/ready", response_model=ReadyResult, responses=responses(503))
async def ready(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    """Readiness of each dependency. `degraded` (with a `reason`) when the warehouse is down (the
    hotset still serves) or the hotset is cold (reads fall back to the warehouse until
    `memstream rebuild`); 503 when Redis or Kafka is down."""
    admin = _admin(request, svc)
    topic = svc.settings.topic_events

    async def kafka() -> None:
        md = await asyncio.to_thread(admin.list_topics, topic, CHECK_TIMEOUT_S)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {topic} is not available")

    async def redis() -> None:
        await svc.redis.ping()

    names = ("redis", "kafka", "warehouse")
    results = await asyncio.gather(
        _check("redis", redis), _check("kafka", kafka), _check("warehouse", svc.warehouse.ping)
    )
    checks = dict(zip(names, results, strict=True))
    if checks["redis"]["status"] == "down" or checks["kafka"]["status"] == "down":
        return error_response(503, "not ready", "not_ready", details={"checks": checks})
    if checks["warehouse"]["status"] != "up":
        return json_response({"status": "degraded", "checks": checks, "reason": "warehouse unavailable"})
    reason = await _cold_reason(svc)
    return json_response({"status": "degraded" if reason else "ok", "checks": checks, "reason": reason})


async def _cold_reason(svc: Services) -> str | None:
    """Why the hotset cannot be trusted to hold what the warehouse holds, or None.

    The warm marker is set by a complete `memstream rebuild`; a flushed or replaced Redis loses
    it. Without it the hotset is cold unless the warehouse is empty too (a fresh deployment, which
    is warm by definition and gets the marker here)."""
    try:
        if await svc.redis.exists(keys.WARM_MARKER):
            return None
        rows = await svc.warehouse.query(f"SELECT 1 AS x FROM {svc.warehouse.table} LIMIT 1", ())
        if not rows:
            await svc.redis.set(keys.WARM_MARKER, "fresh", nx=True)
            return None
    except (RedisError, WarehouseUnavailable, TimeoutError) as exc:
        return f"hotset warmth unknown: {type(exc).__name__}"
    return "hotset cold: the warehouse holds memories the hotset has not been rebuilt from; run `memstream rebuild`"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics() -> Response:
    """Prometheus text exposition (the process registry: gateway and shared metrics)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
