"""Request-level rules that need the request's content: agent scope and handoff events."""

from __future__ import annotations

from app.auth.principal import Principal
from app.auth.rbac import Action, authorize, scoped_agent
from app.models import MemoryEvent, MemoryType


def scope_event(principal: Principal, event: MemoryEvent) -> MemoryEvent:
    """An event as this principal may publish it: a handoff needs `handoff.create`; an
    agent-scoped principal writes as its agent (filled in when absent, 403 when another)."""
    if event.type is MemoryType.HANDOFF:
        authorize(principal, Action.HANDOFF_CREATE)
    agent = scoped_agent(principal, event.agent_id)
    if agent != event.agent_id:
        # The agent id comes from a verified credential (1-128 chars): the event stays valid.
        event = event.model_copy(update={"agent_id": agent})
    return event
