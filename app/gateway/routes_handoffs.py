"""/api/v2/handoffs: agent-to-agent packets (memories of type `handoff`), acknowledged once."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import Response

from app.auth.rbac import scoped_agent
from app.gateway import service
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.docs import Doc, from_record
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
from app.gateway.warehouse import WarehouseUnavailable
from app.gateway.writes import stamp_after, validated
from app.models import Visibility
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
    """Handoffs addressed to `to_agent`, newest first, `limit` per page (`next_cursor` pages on,
    so no pending packet is hidden behind others); pending ones only unless `include_acked`.
    Each packet's references (its `citations`) are resolved: available, deleted or missing."""
    to_agent, channel_visibility, limit = q.to_agent, q.channel_visibility, q.limit
    scoped_agent(caller, to_agent)  # an agent-scoped key reads only its own inbox
    tenant = caller.tenant_id
    index = keys.handoffs_to(tenant, to_agent) if q.include_acked else keys.handoffs_pending(tenant, to_agent)
    cursor = _decode_cursor(q.cursor) if q.cursor else None
    out: list[dict[str, Any]] = []
    stale: list[str] = []
    last: tuple[int, str] | None = cursor
    exhausted = False
    page: list[tuple[str, int]] = []
    for _ in range(HANDOFF_PAGE_ROUNDS):
        want = limit + 1 - len(out)
        page = await svc.reader.page_after(index, last, want)
        exhausted = len(page) < want
        if not page:
            break
        ids = [mid for mid, _ in page]
        slots = await svc.reader.get_many(tenant, ids)
        acked = await svc.reader.acked(tenant, ids)
        for (mid, score), slot, was_acked in zip(page, slots, acked, strict=True):
            if len(out) == limit:
                break  # one more exists: the cursor points before it
            last = (score, mid)
            doc = slot.doc
            if doc is None:
                stale.append(mid)
                continue
            content = doc.content
            if doc.type != "handoff" or content.get("to_agent") != to_agent:
                continue
            if not visible(doc.visibility, channel_visibility) or not service.readable(caller, doc):
                continue
            is_acked = was_acked or doc.status == "done"
            if is_acked and not q.include_acked:
                continue
            out.append(_packet(mid, to_agent, doc, is_acked))
        if len(out) == limit or exhausted:
            break
    svc.reader.prune(tenant, {index: stale})
    await _resolve_references(svc, caller, out, channel_visibility)
    # A full page with index entries left after the cursor has a next page.
    consumed_all = exhausted and (not page or last == (page[-1][1], page[-1][0]))
    more = len(out) == limit and not consumed_all
    next_cursor = _encode_cursor(last) if more and last is not None else None
    return json_response({"to_agent": to_agent, "handoffs": out, "next_cursor": next_cursor})


HANDOFF_PAGE_ROUNDS = 20  # index pages one list call reads at most (skipped entries cost a page)


def _packet(mid: str, to_agent: str, doc: Doc, acked: bool) -> dict[str, Any]:
    record = doc.record
    content = record.get("content") or {}
    return {
        "handoff_id": mid,
        "to_agent": to_agent,
        "from_agent": doc.agent_id,
        "task": str(content.get("task") or ""),
        "text": doc.text,
        "session_id": doc.session_id,
        "occurred_at": record["occurred_at"],
        "acked": acked,
        "references": list(record.get("citations") or []),
        "record": record,
    }


async def _resolve_references(
    svc: Services, caller: Principal, packets: list[dict[str, Any]], channel_visibility: Visibility | None
) -> None:
    """Replace each packet's reference ids with what they name now: the hotset first, then the
    warehouse for ids it does not hold (one batch). A memory the caller may not read
    (service.readable) is reported as missing; so is a deleted one for an agent-scoped caller:
    a tombstone keeps no owner, so only an unscoped caller learns of a deletion."""
    wanted = list(dict.fromkeys(mid for p in packets for mid in p["references"]))
    if not wanted:
        return
    tenant = caller.tenant_id
    scoped = caller.agent_id is not None
    found: dict[str, dict[str, Any]] = {}
    absent = []
    for mid, slot in zip(wanted, await svc.reader.get_many(tenant, wanted), strict=True):
        if slot.deleted:
            if not scoped:
                found[mid] = {"memory_id": mid, "status": "deleted"}
        elif slot.doc is not None:
            found[mid] = _reference(caller, slot.doc, channel_visibility)
        else:
            absent.append(mid)
    if absent:
        try:
            records = await svc.warehouse.get_many(tenant, absent)
        except WarehouseUnavailable:
            records = {}
        for mid, record in records.items():
            if record.deleted:
                if not scoped:
                    found[mid] = {"memory_id": mid, "status": "deleted"}
            else:
                found[mid] = _reference(caller, from_record(record), channel_visibility)
    for p in packets:
        p["references"] = [found.get(mid) or {"memory_id": mid, "status": "missing"} for mid in p["references"]]


def _reference(caller: Principal, doc: Doc, channel_visibility: Visibility | None) -> dict[str, Any]:
    if not visible(doc.visibility, channel_visibility) or not service.readable(caller, doc):
        return {"memory_id": doc.memory_id, "status": "missing"}  # the caller learns nothing
    return {"memory_id": doc.memory_id, "status": "available", "type": doc.type, "text": doc.text}


def _encode_cursor(position: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}|{position[1]}".encode()).decode("ascii")


def _decode_cursor(raw: str) -> tuple[int, str]:
    try:
        score, bar, mid = base64.urlsafe_b64decode(raw.encode("ascii")).decode("utf-8").partition("|")
        if not bar or not mid:
            raise ValueError("no position")
        return int(score), mid
    except (ValueError, UnicodeError) as exc:
        raise ApiError(
            422,
            "cursor is not a next_cursor of this list",
            details=[{"loc": "query.cursor", "msg": "invalid cursor", "type": "value_error"}],
        ) from exc


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
