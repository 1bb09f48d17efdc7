"""/api/v2/handoffs: agent-to-agent packets (memories of type `handoff`), acknowledged once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import Response

from app.auth.rbac import scoped_agent
from app.gateway import service
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.errors import ApiError, SingleValued, responses
from app.gateway.routes_memory import WRITE_ERRORS, Wait, json_response
from app.gateway.schemas import (
    HandoffAckRequest,
    HandoffAckResult,
    HandoffList,
    HandoffListQuery,
    HandoffRequest,
    StoreResult,
)
from app.gateway.visibility import visible
from app.gateway.writes import stamp_after, validated
from sinks.hotset import keys

router = APIRouter(prefix="/api/v2/handoffs", tags=["handoffs"])
Svc = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]


@router.post("", status_code=202, response_model=StoreResult, responses=WRITE_ERRORS)
async def create_handoff(body: HandoffRequest, caller: Caller, svc: Svc, wait: Wait = None) -> Response:
    """Publish a handoff packet for `to_agent` (an event of type `handoff`); `memory_id` is its id."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "tenant_id": caller.tenant_id,
        "type": "handoff",
        "content": {
            "text": body.text or body.task,
            "to_agent": body.to_agent,
            "task": body.task,
            "status": "open",
        },
        "metadata": body.metadata,
        "occurred_at": datetime.now(UTC),
    }
    data["event_id"] = body.event_id or f"handoff-{uuid.uuid4()}"
    optional = {
        "agent_id": scoped_agent(caller, body.from_agent),  # an agent-scoped key sends as its agent
        "session_id": body.session_id,
        "user_id": body.user_id,
        "channel": body.channel.model_dump() if body.channel else None,
        "citations": body.citations,
        "importance": body.importance,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    written = await svc.publisher.publish([validated(data)])
    if wait == "visible":
        status = (await svc.publisher.wait_visible(written))[0]
        return json_response(written[0].result(status), 202)
    return json_response(written[0].result("accepted"), 202)


@router.get("", response_model=HandoffList, responses=responses(401, 422), dependencies=[SingleValued])
async def list_handoffs(caller: Caller, svc: Svc, q: Annotated[HandoffListQuery, Query()]) -> Response:
    """Handoffs addressed to `to_agent`, newest first; pending ones only unless `include_acked`."""
    to_agent, include_acked, channel_visibility, limit = q.to_agent, q.include_acked, q.channel_visibility, q.limit
    scoped_agent(caller, to_agent)  # an agent-scoped key reads only its own inbox
    tenant = caller.tenant_id
    ids = await svc.reader.handoff_ids(tenant, to_agent, min(limit * 3, 300))
    slots = await svc.reader.get_many(tenant, ids)
    acked = await svc.reader.acked(tenant, ids)
    out = []
    stale = []
    for mid, slot, was_acked in zip(ids, slots, acked, strict=True):
        doc = slot.doc
        if doc is None:
            stale.append(mid)
            continue
        if doc.type != "handoff":
            continue
        record = doc.record
        content = record.get("content") or {}
        if content.get("to_agent") != to_agent:
            continue
        if not visible(doc.visibility, channel_visibility) or not service.readable(caller, doc):
            continue
        is_acked = was_acked or doc.status == "done"
        if is_acked and not include_acked:
            continue
        out.append(
            {
                "handoff_id": mid,
                "to_agent": to_agent,
                "from_agent": doc.agent_id,
                "task": str(content.get("task") or ""),
                "text": doc.text,
                "session_id": doc.session_id,
                "occurred_at": record["occurred_at"],
                "acked": is_acked,
                "record": record,
            }
        )
        if len(out) >= limit:
            break
    svc.reader.prune(tenant, {keys.handoffs_to(tenant, to_agent): stale})
    return json_response({"to_agent": to_agent, "handoffs": out})


@router.post(
    "/{handoff_id}/ack",
    response_model=HandoffAckResult,
    responses=responses(400, 401, 403, 404, 409, 413, 422, 503),
)
async def ack_handoff(
    caller: Caller,
    svc: Svc,
    handoff_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: Annotated[HandoffAckRequest | None, Body()] = None,
) -> Response:
    """Acknowledge a handoff exactly once (a second ack is 409). The ack is recorded as a new
    version of the handoff memory (content.status `done`, metadata.acked_at), published with a
    deterministic event id so replays and retries change nothing."""
    ack = body or HandoffAckRequest(agent_id=None, note=None)
    # An agent-scoped key acknowledges as its agent (and so only handoffs addressed to it).
    ack = ack.model_copy(update={"agent_id": scoped_agent(caller, ack.agent_id)})
    tenant = caller.tenant_id
    doc = await service.retrieve(svc, tenant, handoff_id)
    if not service.readable(caller, doc):
        raise ApiError(404, "memory not found")
    if doc.type != "handoff":
        raise ApiError(404, "not a handoff")
    to_agent = doc.content.get("to_agent")
    if ack.agent_id is not None and ack.agent_id != to_agent:
        raise ApiError(403, "only the receiving agent can acknowledge this handoff")
    if doc.status == "done":
        raise ApiError(409, "handoff already acknowledged", "already_acked")
    now = datetime.now(UTC)
    marker = keys.handoff_ack(tenant, handoff_id)
    won = await svc.redis.set(
        marker,
        orjson.dumps({"at": now.isoformat(), "by": ack.agent_id}).decode(),
        nx=True,
        ex=svc.settings.state_ttl_seconds,
    )
    if not won:
        raise ApiError(409, "handoff already acknowledged", "already_acked")
    try:
        event = validated(_ack_event(doc.record, tenant, ack, now))
        written = (await svc.publisher.publish([event]))[0]
    except BaseException:
        await svc.redis.delete(marker)  # not recorded: let a retry acknowledge it
        raise
    return json_response(
        {
            "handoff_id": handoff_id,
            "acked": True,
            "event_id": event.event_id,
            "partition": written.delivered.partition,
            "offset": written.seq,
        }
    )


def _ack_event(record: dict[str, Any], tenant: str, ack: HandoffAckRequest, now: datetime) -> dict[str, Any]:
    when = stamp_after(now, datetime.fromisoformat(str(record["occurred_at"])))
    metadata = {**(record.get("metadata") or {}), "acked_at": when.isoformat()}
    if ack.agent_id:
        metadata["acked_by"] = ack.agent_id
    if ack.note:
        metadata["ack_note"] = ack.note
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"ack-{record['memory_id']}",
        "tenant_id": tenant,
        "memory_id": record["memory_id"],
        "type": "handoff",
        "content": {**(record.get("content") or {}), "status": "done"},
        "metadata": metadata,
        "occurred_at": when,
    }
    for name in ("key", "agent_id", "user_id", "session_id", "importance", "ttl_seconds"):
        if record.get(name) is not None:
            data[name] = record[name]
    if record.get("citations"):
        data["citations"] = record["citations"]
    if record.get("channel_id"):
        data["channel"] = {"id": record["channel_id"], "visibility": record.get("visibility") or "private"}
    return data
