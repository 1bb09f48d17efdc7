"""`MemstreamClient` (sync) and `AsyncMemstreamClient`: the same calls over one shared request
logic (`memstream_client._core`); only sending and sleeping differ."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from memstream_client import _core, models
from memstream_client._core import Call, Done, Retry, RetryPolicy
from memstream_client.errors import MemstreamError

R = TypeVar("R")
OnRetry = Callable[[Retry], None]
Event = models.StoreRequest | Mapping[str, Any]


class _Config:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        bearer_token: str | None,
        headers: Mapping[str, str] | None,
        retry: RetryPolicy | None,
        on_retry: OnRetry | None,
        signing_secret: str | bytes | None = None,
    ) -> None:
        url = base_url or os.environ.get("MEMSTREAM_GATEWAY_URL")
        if not url:
            raise MemstreamError("no gateway URL: pass base_url or set MEMSTREAM_GATEWAY_URL", "client_error")
        self.base_url = url.rstrip("/")
        self.headers = {**_core.auth_headers(api_key, bearer_token), **(headers or {})}
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.signing_secret = signing_secret.encode() if isinstance(signing_secret, str) else signing_secret

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        return _core.build_request(http, call, self.headers, self.signing_secret)


def _env_credentials() -> dict[str, str | None]:
    return {
        "base_url": os.environ.get("MEMSTREAM_GATEWAY_URL"),
        "api_key": os.environ.get("MEMSTREAM_API_KEY") or None,
        "bearer_token": os.environ.get("MEMSTREAM_BEARER_TOKEN") or None,
    }


class MemstreamClient:
    """Blocking client of the HTTP API v2.

    `base_url` defaults to MEMSTREAM_GATEWAY_URL. Credential: `api_key` (sent as X-API-Key) or
    `bearer_token` (a JWT, sent as Authorization: Bearer). `signing_secret` signs writes
    (MEMSTREAM_REQUEST_SIGNING_SECRET of the gateway). Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        signing_secret: str | bytes | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._cfg = _Config(base_url, api_key, bearer_token, headers, retry, on_retry, signing_secret)
        self._owned = http_client is None
        self._http = http_client or httpx.Client(base_url=self._cfg.base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """MEMSTREAM_GATEWAY_URL and MEMSTREAM_API_KEY or MEMSTREAM_BEARER_TOKEN."""
        return cls(**{**_env_credentials(), **options})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _run(self, call: Call[R]) -> R:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._cfg.request(self._http, call))
                step = _core.outcome(call, attempt, self._cfg.retry, response)
            except httpx.TransportError as exc:
                step = _core.outcome(call, attempt, self._cfg.retry, None, exc)
            if isinstance(step, Done):
                return step.value
            if self._cfg.on_retry:
                self._cfg.on_retry(step)
            time.sleep(step.delay)
            attempt += 1

    # memory
    def store(self, event: Event | None = None, /, *, wait: bool = False, **fields: Any) -> models.StoreResult:
        """Store one memory; `wait=True` returns once it is readable. Fields as StoreRequest;
        `text=` is short for content={"text": ...}."""
        return self._run(_core.store(event, wait, fields))

    def batch(self, items: list[Event], *, wait: bool = False) -> models.BatchResult:
        return self._run(_core.batch(items, wait))

    def retrieve(
        self, memory_id: str, *, memory_type: str | None = None, channel_visibility: str | None = None
    ) -> models.RetrieveResult:
        return self._run(_core.retrieve(memory_id, memory_type, channel_visibility))

    def search(self, q: str, **options: Any) -> models.SearchResult:
        """Options: type, session_id, agent_id, channel_visibility, limit, include_superseded, fallback,
        mode (keyword, semantic or hybrid)."""
        return self._run(_core.search(q, **options))

    def stats(self) -> models.StatsResult:
        return self._run(_core.stats())

    def forget(self, memory_id: str, *, wait: bool = False) -> models.StoreResult:
        return self._run(_core.forget(memory_id, wait))

    delete = forget

    def context(self, **options: Any) -> models.ContextResult:
        """Options: session_id, agent_id, channel_visibility, budget_tokens."""
        return self._run(_core.context(**options))

    # handoffs
    def hand_off(
        self, handoff: models.HandoffRequest | Mapping[str, Any] | None = None, /, *, wait: bool = False, **fields: Any
    ) -> models.StoreResult:
        """Fields as HandoffRequest: to_agent, task, text, from_agent, session_id, ..."""
        return self._run(_core.create_handoff(handoff, wait, fields))

    def handoffs(self, to_agent: str, **options: Any) -> models.HandoffList:
        """Options: include_acked, channel_visibility, limit."""
        return self._run(_core.list_handoffs(to_agent, **options))

    def ack_handoff(
        self, handoff_id: str, *, agent_id: str | None = None, note: str | None = None
    ) -> models.HandoffAckResult:
        return self._run(_core.ack_handoff(handoff_id, agent_id, note))

    # operations
    def health(self) -> models.HealthResult:
        return self._run(_core.health())

    def ready(self) -> models.ReadyResult:
        return self._run(_core.ready())


class AsyncMemstreamClient:
    """The same calls as MemstreamClient, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        signing_secret: str | bytes | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._cfg = _Config(base_url, api_key, bearer_token, headers, retry, on_retry, signing_secret)
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=self._cfg.base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """MEMSTREAM_GATEWAY_URL and MEMSTREAM_API_KEY or MEMSTREAM_BEARER_TOKEN."""
        return cls(**{**_env_credentials(), **options})

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _run(self, call: Call[R]) -> R:
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._cfg.request(self._http, call))
                step = _core.outcome(call, attempt, self._cfg.retry, response)
            except httpx.TransportError as exc:
                step = _core.outcome(call, attempt, self._cfg.retry, None, exc)
            if isinstance(step, Done):
                return step.value
            if self._cfg.on_retry:
                self._cfg.on_retry(step)
            await asyncio.sleep(step.delay)
            attempt += 1

    async def store(self, event: Event | None = None, /, *, wait: bool = False, **fields: Any) -> models.StoreResult:
        return await self._run(_core.store(event, wait, fields))

    async def batch(self, items: list[Event], *, wait: bool = False) -> models.BatchResult:
        return await self._run(_core.batch(items, wait))

    async def retrieve(
        self, memory_id: str, *, memory_type: str | None = None, channel_visibility: str | None = None
    ) -> models.RetrieveResult:
        return await self._run(_core.retrieve(memory_id, memory_type, channel_visibility))

    async def search(self, q: str, **options: Any) -> models.SearchResult:
        return await self._run(_core.search(q, **options))

    async def stats(self) -> models.StatsResult:
        return await self._run(_core.stats())

    async def forget(self, memory_id: str, *, wait: bool = False) -> models.StoreResult:
        return await self._run(_core.forget(memory_id, wait))

    delete = forget

    async def context(self, **options: Any) -> models.ContextResult:
        return await self._run(_core.context(**options))

    async def hand_off(
        self, handoff: models.HandoffRequest | Mapping[str, Any] | None = None, /, *, wait: bool = False, **fields: Any
    ) -> models.StoreResult:
        return await self._run(_core.create_handoff(handoff, wait, fields))

    async def handoffs(self, to_agent: str, **options: Any) -> models.HandoffList:
        return await self._run(_core.list_handoffs(to_agent, **options))

    async def ack_handoff(
        self, handoff_id: str, *, agent_id: str | None = None, note: str | None = None
    ) -> models.HandoffAckResult:
        return await self._run(_core.ack_handoff(handoff_id, agent_id, note))

    async def health(self) -> models.HealthResult:
        return await self._run(_core.health())

    async def ready(self) -> models.ReadyResult:
        return await self._run(_core.ready())
