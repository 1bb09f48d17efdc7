"""Request dependencies: the caller's principal (tenant) and the process-wide gateway state.

Authentication is a chain of authenticators; today only the development header exists. JWT and
API-key authenticators (a later issue) plug into the same chain without touching any route.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as aioredis
from fastapi import Request

from app.gateway.errors import ApiError
from app.gateway.reads import HotsetReader
from app.gateway.warehouse import Warehouse
from app.gateway.writes import Publisher
from app.kafka import AsyncProducer
from app.settings import Settings

_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    subject: str
    scheme: Literal["dev-header", "jwt", "api-key"]


class Authenticator(Protocol):
    def __call__(self, request: Request) -> Principal | None:
        """A principal, None when this scheme's credentials are absent; raise ApiError(401) if invalid."""


@dataclass(frozen=True)
class DevTenantHeader:
    """Development only: the tenant named in a header, trusted as is. Off unless enabled."""

    header: str
    enabled: bool

    def __call__(self, request: Request) -> Principal | None:
        value = request.headers.get(self.header)
        if value is None:
            return None
        if not self.enabled:
            raise ApiError(401, f"the development header {self.header} is disabled", "dev_header_disabled")
        if not _TENANT.match(value):
            raise ApiError(401, f"{self.header} must match [A-Za-z0-9_.-]{{1,64}}", "invalid_credentials")
        return Principal(tenant_id=value, subject=f"dev:{value}", scheme="dev-header")


@dataclass
class Services:
    """Everything a request needs, created once per process by the app's lifespan."""

    settings: Settings
    redis: aioredis.Redis
    reader: HotsetReader
    warehouse: Warehouse
    producer: AsyncProducer
    publisher: Publisher


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal(request: Request) -> Principal:
    authenticators: Sequence[Authenticator] = request.app.state.authenticators
    for authenticate in authenticators:
        found = authenticate(request)
        if found is not None:
            return found
    raise ApiError(401, "missing credentials", "unauthenticated")
