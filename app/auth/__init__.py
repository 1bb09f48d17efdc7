"""Security: who is calling (API keys, JWT, signed requests), what they may do (RBAC), how often
(rate limits), what they did (audit entries) and how they connect (TLS). See docs/security.md.

Pure functions live next to thin Redis/HTTP adapters; the gateway wires them into one dependency.
"""

from app.auth.errors import AuthError, AuthUnavailable, Forbidden, RateLimited, Unauthenticated
from app.auth.principal import Principal, Role
from app.auth.rbac import PERMISSIONS, Action, authorize, scoped_agent

__all__ = [
    "PERMISSIONS",
    "Action",
    "AuthError",
    "AuthUnavailable",
    "Forbidden",
    "Principal",
    "RateLimited",
    "Role",
    "Unauthenticated",
    "authorize",
    "scoped_agent",
]
