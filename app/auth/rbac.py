"""Role-based access control: the permission matrix is data (docs/security.md renders it)."""

from __future__ import annotations

from enum import StrEnum

from app.auth.errors import Forbidden
from app.auth.principal import Principal, Role


class Action(StrEnum):
    MEMORY_READ = "memory.read"
    MEMORY_SEARCH = "memory.search"
    MEMORY_WRITE = "memory.write"
    MEMORY_DELETE = "memory.delete"
    CONTEXT_READ = "context.read"
    HANDOFF_CREATE = "handoff.create"
    HANDOFF_READ = "handoff.read"
    HANDOFF_ACK = "handoff.ack"
    STATS_READ = "stats.read"
    ADMIN_KEYS = "admin.keys"
    ADMIN_ERASURE = "admin.erasure"
    ADMIN_EXPORT = "admin.export"


R, W, A = Role.READER, Role.WRITER, Role.ADMIN

# action -> roles that may perform it. Roles are not implicitly hierarchical: every grant is
# written out so the table is the whole truth.
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.MEMORY_READ: frozenset({R, W, A}),
    Action.MEMORY_SEARCH: frozenset({R, W, A}),
    Action.CONTEXT_READ: frozenset({R, W, A}),
    Action.HANDOFF_READ: frozenset({R, W, A}),
    Action.STATS_READ: frozenset({R, W, A}),
    Action.MEMORY_WRITE: frozenset({W, A}),
    Action.MEMORY_DELETE: frozenset({W, A}),
    Action.HANDOFF_CREATE: frozenset({W, A}),
    Action.HANDOFF_ACK: frozenset({W, A}),
    Action.ADMIN_KEYS: frozenset({A}),
    Action.ADMIN_ERASURE: frozenset({A}),
    Action.ADMIN_EXPORT: frozenset({A}),
}


def allowed(roles: frozenset[Role], action: Action) -> bool:
    return bool(roles & PERMISSIONS[action])


def authorize(principal: Principal, action: Action, acting_agent: str | None = None) -> None:
    """Raise Forbidden unless one of the principal's roles grants `action`.

    `acting_agent` is the agent the request acts as (the event's agent_id, the handoff sender
    or recipient, the context's agent). An agent-scoped principal may only act as its agent.
    """
    if not allowed(principal.roles, action):
        raise Forbidden(f"this credential may not perform {action.value}", reason="role")
    if principal.agent_id is not None and acting_agent is not None and acting_agent != principal.agent_id:
        raise Forbidden("this credential is bound to another agent", reason="agent_scope")


def scoped_agent(principal: Principal, requested: str | None) -> str | None:
    """The agent a request acts as: an agent-scoped principal defaults to (and is held to) its own."""
    if principal.agent_id is None:
        return requested
    if requested is not None and requested != principal.agent_id:
        raise Forbidden("this credential is bound to another agent", reason="agent_scope")
    return principal.agent_id


def matrix_markdown() -> str:
    """The permission matrix as a Markdown table (docs/security.md embeds this output)."""
    roles = list(Role)
    lines = ["| action | " + " | ".join(r.value for r in roles) + " |", "|---|" + "---|" * len(roles)]
    for action in Action:
        cells = ["yes" if r in PERMISSIONS[action] else "—" for r in roles]
        lines.append(f"| `{action.value}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
