"""/api/v2/context: the per-turn fast path (two Redis round trips, no warehouse)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.auth.rbac import scoped_agent
from app.gateway import service
from app.gateway.context import TOKEN_COUNTING
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.errors import responses
from app.gateway.schemas import Budget, ContextResult, QueryId
from app.models import Visibility

router = APIRouter(prefix="/api/v2", tags=["context"])


@router.get("/context", response_model=ContextResult, responses=responses(401, 422))
async def get_context(
    caller: Annotated[Principal, Depends(principal)],
    svc: Annotated[Services, Depends(services)],
    session_id: Annotated[QueryId | None, Query()] = None,
    agent_id: Annotated[QueryId | None, Query()] = None,
    channel_visibility: Annotated[Visibility | None, Query()] = None,
    budget_tokens: Annotated[Budget, Query(description=TOKEN_COUNTING)] = 2000,
) -> Response:
    """Identity and rules, active decisions, open tasks, the latest summary and the session's
    recent events: deduplicated, within `budget_tokens`, each item with its memory id, in prompt
    order. Tokens are counted as ceil(UTF-8 bytes / 4) of each item's text."""
    agent_id = scoped_agent(caller, agent_id)  # an agent-scoped key assembles its own context
    ctx = await service.context(
        svc, caller.tenant_id, session_id, agent_id, channel_visibility, budget_tokens
    )
    body = {
        "session_id": session_id,
        "agent_id": agent_id,
        "budget_tokens": budget_tokens,
        "used_tokens": ctx.used_tokens,
        "token_counting": TOKEN_COUNTING,
        "items": [
            {
                "memory_id": i.memory_id,
                "section": i.section,
                "type": i.type,
                "key": i.key,
                "text": i.text,
                "status": i.status,
                "agent_id": i.agent_id,
                "occurred_at": i.occurred_at,
                "tokens": i.tokens,
            }
            for i in ctx.items
        ],
        "omitted": ctx.omitted,
    }
    return Response(orjson.dumps(body), media_type="application/json")
