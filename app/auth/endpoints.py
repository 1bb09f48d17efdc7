"""The gateway's endpoints and the action each one needs (docs/security.md renders this table).

Keyed by (method, route template) as FastAPI matches them. The authentication dependency refuses
any protected route missing here, and a test checks that every /api route of the app is listed.
"""

from __future__ import annotations

from app.auth.rbac import Action

API = "/api/v2"

ROUTE_ACTIONS: dict[tuple[str, str], Action] = {
    ("POST", f"{API}/memory/store"): Action.MEMORY_WRITE,
    ("POST", f"{API}/memory/batch"): Action.MEMORY_WRITE,
    ("GET", f"{API}/memory/retrieve"): Action.MEMORY_READ,
    ("GET", f"{API}/memory/search"): Action.MEMORY_SEARCH,
    ("GET", f"{API}/memory/stats"): Action.STATS_READ,
    ("DELETE", f"{API}/memory/{{memory_id}}"): Action.MEMORY_DELETE,
    ("GET", f"{API}/context"): Action.CONTEXT_READ,
    ("GET", f"{API}/subscribe"): Action.MEMORY_READ,
    ("POST", f"{API}/handoffs"): Action.HANDOFF_CREATE,
    ("GET", f"{API}/handoffs"): Action.HANDOFF_READ,
    ("POST", f"{API}/handoffs/{{handoff_id}}/ack"): Action.HANDOFF_ACK,
    ("POST", f"{API}/admin/erasure"): Action.ADMIN_ERASURE,
    ("POST", f"{API}/admin/export"): Action.ADMIN_EXPORT,
}


def endpoints_markdown() -> str:
    lines = ["| endpoint | action |", "|---|---|"]
    for (method, path), action in ROUTE_ACTIONS.items():
        lines.append(f"| `{method} {path}` | `{action.value}` |")
    return "\n".join(lines)
