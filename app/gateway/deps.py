"""Request dependencies: the caller's principal (tenant) and the process-wide gateway state.

Authentication, rate limiting, request signatures and RBAC are one dependency, `principal`
(app.auth.asgi): API keys, JWT bearer tokens, and the development tenant header only when
`dev_tenant_header_enabled`. The tenant comes only from the verified credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from fastapi import Request

from app.auth.asgi import current_principal as principal
from app.auth.principal import Principal
from app.embed import Embedder
from app.gateway.context import StandingCache
from app.gateway.coverage import Coverage
from app.gateway.reads import HotsetReader
from app.gateway.vectors import VectorCache
from app.gateway.warehouse import Warehouse
from app.gateway.writes import Publisher
from app.kafka import AsyncProducer
from app.settings import Settings

__all__ = ["Principal", "Services", "principal", "services"]


@dataclass
class Services:
    """Everything a request needs, created once per process by the app's lifespan."""

    settings: Settings
    redis: aioredis.Redis
    reader: HotsetReader
    warehouse: Warehouse
    producer: AsyncProducer
    publisher: Publisher
    embedder: Embedder | None = None  # None: semantic search is off
    vectors: VectorCache | None = None
    standing: StandingCache = field(default_factory=lambda: StandingCache(0))
    coverage: Coverage | None = None  # None: a search the hotset cannot fill always asks the warehouse


async def services(request: Request) -> Services:
    # async although it awaits nothing: FastAPI runs a plain function in its thread pool, a
    # thread hop per request (a quarter of a retrieve's time).
    svc: Services = request.app.state.services
    return svc
