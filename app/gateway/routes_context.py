"""/api/v2/context: the per-turn fast path (index pages and one MGET per round; the warehouse only
for active memories whose hotset copy expired)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.types import Scope

from app.auth.rbac import scoped_agent
from app.gateway import service
from app.gateway.context import TOKEN_COUNTING
from app.gateway.deps import Principal, Services, principal, services
from app.gateway.errors import SingleValued, responses
from app.gateway.routes_memory import audited_json
from app.gateway.schemas import ContextQuery, ContextResult

router = APIRouter(prefix="/api/v2", tags=["context"])


async def context_reply(scope: Scope, caller: Principal, svc: Services, q: ContextQuery) -> Response:
    agent_id = scoped_agent(caller, q.agent_id)  # an agent-scoped key assembles its own context
    outcome = await service.context(
        svc, caller.tenant_id, q.session_id, agent_id, q.channel_visibility, q.budget_tokens, caller.agent_id
    )
    ctx = outcome.context
    body = {
        "session_id": q.session_id,
        "agent_id": agent_id,
        "budget_tokens": q.budget_tokens,
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
        "warehouse_consulted": outcome.warehouse_consulted,
    }
    return audited_json(scope, body)


@router.get("/context", response_model=ContextResult, responses=responses(401, 422), dependencies=[SingleValued])
async def get_context(
    request: Request,
    caller: Annotated[Principal, Depends(principal)],
    svc: Annotated[Services, Depends(services)],
    q: Annotated[ContextQuery, Query()],
) -> Response:
    """Every active identity fact, rule and decision in scope, the open tasks, the latest valid
    summary and the session's recent events: deduplicated, within `budget_tokens` (sections give
    way from the last: recent, summary, tasks, decisions, rules, identity), each item with its
    memory id, in prompt order; `omitted` counts what each section left out. Tokens are counted
    as ceil(UTF-8 bytes / 4) of each item's text."""
    return await context_reply(request.scope, caller, svc, q)
