"""/api/v2/admin: erasure and export by data subject (admin role; app/erasure.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from snowflake.connector.errors import Error as SnowflakeError

from app.auth.asgi import note_response_body
from app.erasure import Subject, SubjectStores, erase, export, export_lines
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.errors import ApiError, responses
from app.gateway.routes_memory import json_response
from app.gateway.schemas import ErasureRequest, ErasureResult, SubjectRequest
from app.kafka import BrokerUnavailable

router = APIRouter(prefix="/api/v2/admin", tags=["admin"])

Svc = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]
T = TypeVar("T")


async def _guarded(svc: Services, op: Awaitable[T], stores: SubjectStores) -> T:
    """A store that is down is a 503 (nothing half-hidden: a retry finishes the job)."""
    try:
        return await op
    except BrokerUnavailable as exc:
        raise ApiError(503, "the broker did not acknowledge the deletes", "broker_unavailable") from exc
    except (SnowflakeError, OSError) as exc:
        raise ApiError(
            503, "the warehouse is unavailable", "warehouse_unavailable", details={"reason": str(exc)[:300]}
        ) from exc
    finally:
        stores.close()


@router.post("/erasure", response_model=ErasureResult, responses=responses(400, 401, 403, 422, 503))
async def erasure(request: Request, body: ErasureRequest, caller: Caller, svc: Svc) -> Response:
    """Erase everything held about a subject in every store (hotset, warehouse, tombstones on
    memory.records); idempotent; audited with counts only. Re-run after a 503."""
    stores = SubjectStores(svc.settings, svc.redis, svc.producer)
    subject = Subject(body.subject_type, body.subject_id)
    report = await _guarded(svc, erase(stores, caller.tenant_id, subject, caller.principal_id, body.wait_s), stores)
    note_response_body(request.scope, {})
    return json_response(report.as_json())


@router.post(
    "/export",
    responses={**responses(400, 401, 403, 422, 503), 200: {"content": {"application/x-ndjson": {}}}},
)
async def export_subject(request: Request, body: SubjectRequest, caller: Caller, svc: Svc) -> Response:
    """Everything held about a subject as JSON Lines (`{"source", "record"}` per memory): the
    warehouse, overlaid by newer hotset copies."""
    stores = SubjectStores(svc.settings, svc.redis, svc.producer)
    records = await _guarded(svc, export(stores, caller.tenant_id, Subject(body.subject_type, body.subject_id)), stores)
    note_response_body(request.scope, {})
    return StreamingResponse(export_lines(records), media_type="application/x-ndjson")
