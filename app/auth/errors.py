"""Typed security errors. The gateway maps them to the contract's error shape (401/403/429).

Messages are deliberately generic: they never say whether a key prefix exists, which JWT check
failed in detail beyond a short reason code, or anything about another tenant.
"""

from __future__ import annotations


class AuthError(Exception):
    status: int = 401
    code: str = "unauthorized"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A short machine reason for logs and metrics (e.g. "expired", "revoked"), never a secret.
        self.reason = reason or self.code


class Unauthenticated(AuthError):
    """No usable credential (missing, malformed, unknown, revoked, expired, bad signature)."""

    status = 401
    code = "unauthorized"


class Forbidden(AuthError):
    """A valid credential that may not perform the action."""

    status = 403
    code = "forbidden"


class RateLimited(AuthError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int, reason: str | None = None) -> None:
        super().__init__(message, reason)
        self.retry_after_s = retry_after_s


class AuthUnavailable(AuthError):
    """A dependency of authentication (the JWKS endpoint) cannot be reached: not the caller's fault."""

    status = 503
    code = "unavailable"
