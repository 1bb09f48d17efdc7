"""`MemstreamClient` (sync) and `AsyncMemstreamClient`: the same calls over one shared request
logic (`memstream_client._core`); only sending and sleeping differ."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from memstream_client import _core, feed, models
from memstream_client._core import Call, Done, Retry, RetryPolicy
from memstream_client.errors import MemstreamError, TransportError

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


def _stream_timeout(base: httpx.Timeout, read_timeout: float | None) -> httpx.Timeout:
    # The gateway sends a heartbeat every MEMSTREAM_SUBSCRIBE_HEARTBEAT_S: a longer silence is a dead stream.
    return httpx.Timeout(connect=base.connect, read=read_timeout, write=base.write, pool=base.pool)


def _resume_delay(cfg: _Config, attempt: int, reconnect: bool, error: MemstreamError) -> float:
    """How long to wait before reopening a stream that ended, or raise `error`."""
    if not reconnect or attempt >= cfg.retry.max_retries:
        raise error
    delay = cfg.retry.backoff(attempt)
    if cfg.on_retry:
        cfg.on_retry(Retry(attempt, delay, error.code, "GET", feed.PATH))
    return delay


def _open_failure(cfg: _Config, attempt: int, reconnect: bool, response: httpx.Response) -> float:
    failure = _core.api_error(response.status_code, response.headers, response.content)
    delay = cfg.retry.after_status(attempt, response.status_code, failure.retry_after) if reconnect else None
    if delay is None:
        raise failure
    return delay


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

    # change feed
    def subscribe(
        self,
        *,
        type: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        channel_visibility: str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout: float | None = 60.0,
    ) -> Generator[feed.ChangeEvent, None, None]:
        """The tenant's memory changes (GET /api/v2/subscribe), as they happen. With `reconnect`,
        a stream the gateway ends (`SubscriptionDropped`) or a broken connection is reopened with
        Last-Event-ID after the retry policy's backoff, so nothing is missed or repeated within
        the feed's horizon (a `gap` event says when it was not); else those errors are raised."""
        cursor = feed.Cursor(last_event_id)
        query = feed.params(type, session_id, agent_id, channel_visibility)
        timeout = _stream_timeout(self._http.timeout, read_timeout)
        attempt = 0
        while True:
            try:
                headers = {**self._cfg.headers, **cursor.headers()}
                with self._http.stream("GET", feed.PATH, params=query, headers=headers, timeout=timeout) as r:
                    if r.status_code != 200:
                        r.read()
                        delay = _open_failure(self._cfg, attempt, reconnect, r)
                    else:
                        decoder = feed.SseDecoder()
                        for line in r.iter_lines():
                            msg = decoder.line(line)
                            event = cursor.take(msg) if msg is not None else None
                            if event is not None:
                                attempt = 0
                                yield event
                        ended = TransportError("the change feed ended", "transport_error")
                        delay = _resume_delay(self._cfg, attempt, reconnect, ended)
            except feed.SubscriptionDropped as exc:
                delay = _resume_delay(self._cfg, attempt, reconnect, exc)
            except httpx.TransportError as exc:
                lost = TransportError(f"GET {feed.PATH}: {exc.__class__.__name__}: {exc}", "transport_error")
                delay = _resume_delay(self._cfg, attempt, reconnect, lost)
            time.sleep(delay)
            attempt += 1

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

    async def subscribe(
        self,
        *,
        type: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        channel_visibility: str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout: float | None = 60.0,
    ) -> AsyncGenerator[feed.ChangeEvent, None]:
        """As MemstreamClient.subscribe, iterated with `async for`."""
        cursor = feed.Cursor(last_event_id)
        query = feed.params(type, session_id, agent_id, channel_visibility)
        timeout = _stream_timeout(self._http.timeout, read_timeout)
        attempt = 0
        while True:
            try:
                headers = {**self._cfg.headers, **cursor.headers()}
                async with self._http.stream("GET", feed.PATH, params=query, headers=headers, timeout=timeout) as r:
                    if r.status_code != 200:
                        await r.aread()
                        delay = _open_failure(self._cfg, attempt, reconnect, r)
                    else:
                        decoder = feed.SseDecoder()
                        async for line in r.aiter_lines():
                            msg = decoder.line(line)
                            event = cursor.take(msg) if msg is not None else None
                            if event is not None:
                                attempt = 0
                                yield event
                        ended = TransportError("the change feed ended", "transport_error")
                        delay = _resume_delay(self._cfg, attempt, reconnect, ended)
            except feed.SubscriptionDropped as exc:
                delay = _resume_delay(self._cfg, attempt, reconnect, exc)
            except httpx.TransportError as exc:
                lost = TransportError(f"GET {feed.PATH}: {exc.__class__.__name__}: {exc}", "transport_error")
                delay = _resume_delay(self._cfg, attempt, reconnect, lost)
            await asyncio.sleep(delay)
            attempt += 1

    async def health(self) -> models.HealthResult:
        return await self._run(_core.health())

    async def ready(self) -> models.ReadyResult:
        return await self._run(_core.ready())
