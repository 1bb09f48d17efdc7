"""/api/v2/memory: store, batch, retrieve, search, delete, stats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Scope

from app.auth.asgi import note_response_body
from app.auth.errors import Forbidden
from app.auth.scope import scope_event
from app.gateway import service
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.errors import ApiError, SingleValued, responses, validation_error
from app.gateway.schemas import (
    BatchRequest,
    BatchResult,
    RetrieveQuery,
    RetrieveResult,
    SearchQuery,
    SearchResult,
    StatsResult,
    StoreRequest,
    StoreResult,
)
from app.gateway.search import SearchParams, query_terms
from app.gateway.stats import tenant_stats
from app.gateway.visibility import visible
from app.gateway.writes import Written, build_event, stamp_after, validated
from app.models import MemoryEvent

router = APIRouter(prefix="/api/v2/memory", tags=["memory"])

Svc = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]
Wait = Annotated[
    Literal["visible"] | None,
    Query(description="`visible`: answer only once the write is readable (bounded by a timeout, then 504)"),
]
WRITE_ERRORS = responses(400, 401, 403, 413, 422, 503, 504)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def audited_json(scope: Scope, body: dict[str, Any], status: int = 200) -> Response:
    """A JSON answer whose ids the audit entry takes from `body` (no re-parse of the response)."""
    note_response_body(scope, body)
    return json_response(body, status)


async def _finish(svc: Services, written: list[Written], wait: str | None) -> list[dict[str, Any]]:
    if wait == "visible":
        statuses = await svc.publisher.wait_visible(written)
        return [w.result(s) for w, s in zip(written, statuses, strict=True)]
    return [w.result("accepted") for w in written]


@router.post("/store", status_code=202, response_model=StoreResult, responses=WRITE_ERRORS)
async def store(body: StoreRequest, caller: Caller, svc: Svc, wait: Wait = None) -> Response:
    """Publish one memory event (tenant from the credentials). 202 once the broker acknowledged it."""
    event = scope_event(caller, build_event(body, caller.tenant_id))
    if event.memory_id is not None:
        await service.check_writable(svc, caller, event.memory_id)
    await service.check_supersedes(svc, caller, event)
    problem = (await service.write_errors(svc, caller.tenant_id, [event]))[0]
    if problem is not None:
        raise problem
    written = await svc.publisher.publish([event])
    return json_response((await _finish(svc, written, wait))[0], 202)


@router.post("/batch", status_code=202, response_model=BatchResult, responses=WRITE_ERRORS)
async def batch(body: BatchRequest, caller: Caller, svc: Svc, wait: Wait = None) -> Response:
    """Up to MEMSTREAM_GATEWAY_BATCH_MAX_ITEMS events; invalid items are reported per item and the
    valid ones published (in order, acks=all). Retry with the same event ids: replays change nothing."""
    limit = svc.settings.gateway_batch_max_items
    if len(body.items) > limit:
        raise ApiError(
            422,
            f"a batch holds at most {limit} items",
            details=[{"loc": "body.items", "msg": "too many items", "type": "too_long"}],
        )
    events: list[tuple[int, MemoryEvent]] = []
    results: list[dict[str, Any]] = []
    for i, raw in enumerate(body.items):
        loc = ("body", "items", i)
        try:
            try:
                item = StoreRequest.model_validate(raw)
            except ValidationError as exc:
                raise validation_error(exc, loc) from exc
            # Acting as another agent refuses the whole batch (403), as for a single store.
            event = scope_event(caller, build_event(item, caller.tenant_id, loc))
            try:
                if event.memory_id is not None:
                    await service.check_writable(svc, caller, event.memory_id)
                await service.check_supersedes(svc, caller, event)
            except Forbidden as exc:  # another agent's memory: this item only
                raise ApiError(exc.status, exc.message, exc.code, {"reason": exc.reason}) from exc
            events.append((i, event))
        except ApiError as exc:
            results.append(
                {
                    "index": i,
                    "status": exc.status,
                    "error": {"code": exc.code, "message": exc.message, "details": exc.details},
                }
            )
    problems = await service.write_errors(svc, caller.tenant_id, [e for _, e in events])
    for (i, _), err in zip(events, problems, strict=True):
        if err is not None:
            results.append(
                {
                    "index": i,
                    "status": err.status,
                    "error": {"code": err.code, "message": err.message, "details": err.details},
                }
            )
    events = [item for item, err in zip(events, problems, strict=True) if err is None]
    if not events:
        raise ApiError(422, "no valid item in the batch", details=results)
    written = await svc.publisher.publish([e for _, e in events])
    for (i, _), res in zip(events, await _finish(svc, written, wait), strict=True):
        results.append({"index": i, **res})
    results.sort(key=lambda r: int(r["index"]))
    return json_response({"accepted": len(events), "rejected": len(results) - len(events), "items": results}, 202)


async def retrieve_reply(scope: Scope, caller: Principal, svc: Services, q: RetrieveQuery) -> Response:
    doc = await service.retrieve(svc, caller.tenant_id, q.memory_id)
    if not service.readable(caller, doc):
        raise ApiError(404, "memory not found")  # another agent's memory reads as an unknown id
    if q.memory_type is not None and doc.type != q.memory_type.value:
        raise ApiError(404, f"memory is not of type {q.memory_type.value}")
    if not visible(doc.visibility, q.channel_visibility):
        raise ApiError(404, "memory not found")  # as for an unknown id: a public read learns nothing
    reason = await service.staleness(svc, doc)
    body: dict[str, Any] = {"source": doc.source, "record": doc.record}
    if reason is not None:
        body["stale"] = {"reason": reason}
    return audited_json(scope, body)


@router.get(
    "/retrieve", response_model=RetrieveResult, responses=responses(401, 404, 422, 503), dependencies=[SingleValued]
)
async def retrieve(request: Request, caller: Caller, svc: Svc, q: Annotated[RetrieveQuery, Query()]) -> Response:
    """One record: the hotset first, then the warehouse (which re-warms the hotset)."""
    return await retrieve_reply(request.scope, caller, svc, q)


async def search_reply(scope: Scope, caller: Principal, svc: Services, q: SearchQuery) -> Response:
    params = SearchParams(
        terms=query_terms(q.q),
        type=q.type.value if q.type else None,
        session_id=q.session_id,
        agent_id=q.agent_id,
        channel_visibility=q.channel_visibility,
        include_superseded=q.include_superseded,
        limit=q.limit,
        reader_agent=caller.agent_id,
        text=q.q,
    )
    out = await service.search(svc, caller.tenant_id, params, q.fallback, q.mode)
    return audited_json(
        scope,
        {
            "query": q.q,
            "terms": list(params.terms),
            "results": [service.hit_json(h) for h in out.hits],
            "candidates_examined": out.examined,
            "candidate_pool": svc.settings.search_candidate_pool,
            "sources": out.sources,
            "warehouse": out.warehouse,
            "mode": out.mode,
            "candidates": out.candidates,
        },
    )


@router.get("/search", response_model=SearchResult, responses=responses(401, 422), dependencies=[SingleValued])
async def search(request: Request, caller: Caller, svc: Svc, q: Annotated[SearchQuery, Query()]) -> Response:
    """Ranked search: keyword (BM25), semantic (vectors) or hybrid (both fused), with recency and
    importance, over bounded candidate pools."""
    return await search_reply(request.scope, caller, svc, q)


@router.get("/stats", response_model=StatsResult, responses=responses(401))
async def stats(caller: Caller, svc: Svc) -> Response:
    """Counts by type, hotset size, cache hit ratio, consumer lag, dead letters, sink lag."""
    return json_response(await tenant_stats(svc, caller.tenant_id))


@router.delete("/{memory_id}", status_code=202, response_model=StoreResult, responses=WRITE_ERRORS)
async def forget(
    caller: Caller, svc: Svc, memory_id: Annotated[str, Path(min_length=1, max_length=128)], wait: Wait = None
) -> Response:
    """Forget a memory: publishes a delete event (the hotset and the warehouse drop it)."""
    await service.check_writable(svc, caller, memory_id)
    occurred = await service.latest_occurred(svc, caller.tenant_id, memory_id)
    event = validated(
        {
            "schema_version": 1,
            "event_id": f"del-{uuid.uuid4()}",
            "op": "delete",
            "tenant_id": caller.tenant_id,
            "memory_id": memory_id,
            "occurred_at": stamp_after(datetime.now(UTC), occurred),
        },
        ("path",),
    )
    written = await svc.publisher.publish([event])
    return json_response((await _finish(svc, written, wait))[0], 202)
