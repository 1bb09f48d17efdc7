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


# Inside a tenant, an agent-scoped credential (a key made with `--agent`, a token with the agent
# claim) is held to one rule per direction; an unscoped credential reads and writes tenant-wide.
#
#   read:  its own agent's memories, unscoped ones (no agent_id: tenant knowledge), and the
#          handoffs addressed to its agent (its inbox).
#   write: new memories, and rewrites or deletes of its own agent's memories only. A handoff
#          belongs to its sender; its recipient acknowledges it (POST /handoffs/{id}/ack).
#
# Every read path applies `may_read` (retrieve, search in the hotset and, as SQL, in the
# warehouse, context, the handoff inbox; the hot-read ASGI path and the FastAPI routes share
# the reply functions), and every write path `may_write`.
HANDOFF = MemoryType.HANDOFF.value


def may_read(reader_agent: str | None, owner: str | None, memory_type: str | None, to_agent: str | None) -> bool:
    """Whether a credential scoped to `reader_agent` (None: unscoped) may read a memory of
    `owner` (its agent_id), of `memory_type`, addressed to `to_agent` (handoffs)."""
    if reader_agent is None or owner is None or owner == reader_agent:
        return True
    return memory_type == HANDOFF and to_agent == reader_agent


def may_write(writer_agent: str | None, existing_owner: str | None, exists: bool) -> bool:
    """Whether a credential scoped to `writer_agent` may rewrite or delete a memory id that
    `exists` with agent_id `existing_owner`. New ids are always writable."""
    return writer_agent is None or not exists or existing_owner == writer_agent
