"""GET /api/v2/subscribe: the tenant's memory changes as Server-Sent Events.

The source is the tenant's feed stream in Redis (`keys.feed`), appended by the ingest worker's
hotset write; the gateway only reads it, so every gateway serves the same feed and an SSE event id
(the stream id) resumes on any of them (Last-Event-ID) within the stream's horizon
(MEMSTREAM_FEED_MAX_LEN entries). Per subscriber, one task reads the stream with XREAD BLOCK on a
connection of the feed pool and fills a bounded queue; the response drains it. A subscriber that
takes nothing from its full queue for MEMSTREAM_SUBSCRIBE_STALL_S, or falls behind the feed's
horizon, is dropped with a final `event: error` (reason `slow_subscriber`): the worker never
waits for a subscriber, and a gateway holds at most MEMSTREAM_SUBSCRIBE_QUEUE_MAX events (plus one
read of READ_COUNT entries) for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from redis.exceptions import RedisError, ResponseError

from app.auth.asgi import note_response_body
from app.auth.rbac import scoped_agent
from app.gateway.deps import Principal, principal
from app.gateway.errors import ApiError, SingleValued, responses
from app.gateway.feed import HEARTBEAT, STREAM_ID, FeedFilter, event_data, frame, matches, parse_id
from app.gateway.gmetrics import SUBSCRIBERS, SUBSCRIBERS_DROPPED
from app.gateway.schemas import SubscribeQuery
from app.redis_client import create_redis
from app.settings import Settings
from sinks.hotset import keys

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2", tags=["subscribe"])

READ_COUNT = 100  # stream entries per XREAD
BLOCK_MS = 5000  # one XREAD waits at most this long, so a cancelled subscriber's reader ends soon


class FeedHub:
    """The process's subscriptions: their Redis pool (one connection per subscriber, blocking
    reads never take the request pool's connections), the subscriber limit and shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: aioredis.Redis = create_redis(
            settings,
            max_connections=settings.subscribe_max_subscribers,
            socket_timeout=BLOCK_MS / 1000 + settings.redis_timeout_s,
            gauged=False,
        )
        self.open = 0
        self.closing = asyncio.Event()
        self.loop = asyncio.get_running_loop()  # created in the app's lifespan

    def shutdown(self) -> None:
        """End every subscription (each gets `event: error`, reason `shutdown`): a server
        draining its connections must not wait for streams that never end."""
        self.closing.set()

    def shutdown_threadsafe(self) -> None:
        """`shutdown` from a signal handler or another thread."""
        self.loop.call_soon_threadsafe(self.shutdown)

    async def close(self) -> None:
        self.closing.set()
        await self.redis.aclose()

    async def subscribe(self, tenant: str, f: FeedFilter, last_event_id: str | None) -> Subscription:
        if self.closing.is_set():
            raise ApiError(503, "the gateway is shutting down", code="unavailable")
        if self.open >= self.settings.subscribe_max_subscribers:
            raise ApiError(503, "too many subscriptions on this gateway", code="too_many_subscribers")
        key = keys.feed(tenant)
        gap: dict[str, str] | None = None
        if last_event_id is None:
            newest = await self.redis.xrevrange(key, count=1)
            start = newest[0][0] if newest else "0-0"
        else:
            start = last_event_id
            gap = await self.gap(key, start)
        return Subscription(self, key, f, start, gap)

    async def gap(self, key: str, last_event_id: str) -> dict[str, str] | None:
        """The stream was trimmed past `last_event_id`: changes after it may be gone. Trimming
        removes the oldest entries, so every entry before the first one left is gone; whether one
        lay between `last_event_id` and that first entry is unknown, so that counts as a gap."""
        try:
            info: dict[str, Any] = await self.redis.xinfo_stream(key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        first = info.get("first-entry")
        trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if trimmed and first and parse_id(first[0]) > parse_id(last_event_id):
            return {"last_event_id": last_event_id, "oldest": first[0]}
        return None


class Subscription:
    def __init__(self, hub: FeedHub, key: str, f: FeedFilter, start: str, gap: dict[str, str] | None) -> None:
        self.hub, self.key, self.filter, self.start, self.gap = hub, key, f, start, gap
        self.limit = hub.settings.subscribe_queue_max
        self.queue: asyncio.Queue[tuple[str, dict[str, str]] | None] = asyncio.Queue(self.limit)
        self.reason: str | None = None

    def _drop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            SUBSCRIBERS_DROPPED.labels(reason).inc()
            # Wakes a response waiting on an empty queue; a full one sees the reason at its next get.
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    async def _read(self) -> None:
        stall_s = self.hub.settings.subscribe_stall_s
        last = self.start
        lagging = False
        try:
            while self.reason is None:
                if lagging and await self.hub.gap(self.key, last) is not None:
                    self._drop("slow_subscriber")  # the feed was trimmed past what it has read
                    return
                got = await self.hub.redis.xread({self.key: last}, count=READ_COUNT, block=BLOCK_MS)
                lagging = False
                for _, entries in got or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        if not matches(fields, self.filter):
                            continue
                        lagging = lagging or self.queue.qsize() >= self.limit
                        try:
                            await asyncio.wait_for(self.queue.put((entry_id, fields)), stall_s)
                        except TimeoutError:
                            self._drop("slow_subscriber")  # took nothing from a full queue for stall_s
                            return
        except RedisError as exc:
            log.warning("change feed read failed: %s", exc)
            self._drop("feed_unavailable")

    async def _watch_shutdown(self) -> None:
        await self.hub.closing.wait()
        self._drop("shutdown")

    async def frames(self) -> AsyncIterator[bytes]:
        heartbeat = self.hub.settings.subscribe_heartbeat_s
        last = self.start
        self.hub.open += 1
        SUBSCRIBERS.inc()
        tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch_shutdown())]
        try:
            if self.gap is not None:
                yield frame("gap", self.gap)
            yield frame("ready", {"last_event_id": self.start}, self.start)
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), heartbeat)
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                if self.reason is not None or item is None:
                    yield frame("error", _error(self.reason or "shutdown", last))
                    return
                entry_id, fields = item
                yield frame(fields.get("kind", "updated"), event_data(fields), entry_id)
                last = entry_id
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.hub.open -= 1
            SUBSCRIBERS.dec()


_REASONS = {
    "slow_subscriber": "the subscriber fell too far behind; reconnect with Last-Event-ID",
    "feed_unavailable": "the change feed is unavailable; reconnect with Last-Event-ID",
    "shutdown": "the gateway is shutting down; reconnect with Last-Event-ID",
}


def _error(reason: str, last_event_id: str) -> dict[str, Any]:
    return {"error": {"code": reason, "message": _REASONS[reason], "details": {"last_event_id": last_event_id}}}


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=STREAM_ID.pattern,
        description="resume after this event id (as sent in `id:`), on any gateway",
    ),
]


@router.get(
    "/subscribe",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **responses(401, 403, 422, 503)},
    dependencies=[SingleValued],
)
async def subscribe(
    request: Request,
    caller: Annotated[Principal, Depends(principal)],
    q: Annotated[SubscribeQuery, Query()],
    last_event_id: LastEventId = None,
) -> Response:
    """The tenant's memory changes (created, updated, superseded, deleted, handoff_delivered) as
    Server-Sent Events, filtered like the reads (type, session, agent, channel visibility), with
    heartbeats; resumable with Last-Event-ID."""
    agent_id = scoped_agent(caller, q.agent_id)  # an agent-scoped credential follows its own agent
    f = FeedFilter(q.type.value if q.type else None, q.session_id, agent_id, q.channel_visibility)
    hub: FeedHub = request.app.state.feed
    sub = await hub.subscribe(caller.tenant_id, f, last_event_id)
    note_response_body(request.scope, {})  # nothing for the audit entry to collect from the stream
    return StreamingResponse(
        sub.frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
