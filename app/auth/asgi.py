"""ASGI/FastAPI glue: the one authentication dependency, the error handler, the audit middleware.

Gateway-agnostic: the app supplies a table (method, route template) -> Action. A route missing
from the table is refused (fail closed), so a new endpoint cannot ship without a permission.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.audit import AuditSink, audit_entry, unique_id
from app.auth.authenticator import Authenticator
from app.auth.errors import AuthError, Forbidden, RateLimited
from app.auth.principal import Principal
from app.auth.ratelimit import RateLimiter
from app.auth.rbac import Action, authorize
from app.auth.registry import KeyRegistry
from app.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
# The request being served: writes stamp it on their events (app/gateway/writes.py).
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("memstream_request_id", default=None)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Reasons a client may see in `details.reason`; anything else is reported as a bare 401/403.
PUBLIC_REASONS = frozenset({
    "missing", "ambiguous", "scheme", "malformed", "too_large", "algorithm", "unknown_key", "expired",
    "not_yet_valid", "audience", "issuer", "signature", "missing_claim", "tenant_claim", "agent_claim",
    "jwt_disabled", "key_malformed", "key_unknown", "key_revoked", "key_expired", "signature_missing",
    "signature_malformed", "signature_stale", "signature_mismatch", "signature_replay", "role",
    "agent_scope", "rate_key", "rate_tenant", "dev_header_disabled", "dev_tenant", "key_store",
})  # fmt: skip


@dataclass(frozen=True)
class AuditContext:
    principal: Principal
    action: Action
    route: str
    method: str


class Security:
    """Per-process security services; the app keeps one in `app.state.security`."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        route_actions: Mapping[tuple[str, str], Action],
        audit: AuditSink | None = None,
        registry: KeyRegistry | None = None,
    ) -> None:
        self.authenticator = Authenticator.from_settings(settings, redis, registry)
        self.limiter = RateLimiter.from_settings(redis, settings)
        self.route_actions = dict(route_actions)
        self.audit = audit

    def action_for(self, request: Request) -> tuple[str, Action]:
        path = getattr(request.scope.get("route"), "path", None) or request.url.path
        action = self.route_actions.get((request.method, path))
        if action is None:
            raise Forbidden("no permission is defined for this endpoint", reason="unmapped")
        return path, action

    async def authenticate(self, request: Request) -> Principal:
        """Who is calling (401), how often (429), signed if required (401), allowed (403)."""
        route, action = self.action_for(request)
        principal = await self.authenticator.authenticate(request.headers)
        # From here on the request is attributable: refusals below are audited too.
        request.state.audit = AuditContext(principal, action, route, request.method)
        if principal.kind != "dev":  # development-only tenants are not throttled (load tests)
            await self.limiter.check(principal)
        if self.authenticator.signature_expected(request.method, request.headers):
            raw_path = request.scope.get("raw_path") or request.url.path.encode()
            query = request.scope.get("query_string") or b""
            target = (raw_path + (b"?" + query if query else b"")).decode("latin-1")
            body = await request.body()
            await self.authenticator.check_signature(request.method, target, request.headers, body)
        authorize(principal, action)
        return principal


async def current_principal(request: Request) -> Principal:
    """The FastAPI dependency every protected route uses."""
    security: Security = request.app.state.security
    return await security.authenticate(request)


def auth_error_response(exc: AuthError) -> Response:
    details = {"reason": exc.reason} if exc.reason in PUBLIC_REASONS else None
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="memstream"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    body = {"error": {"code": exc.code, "message": exc.message, "details": details}}
    return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json", headers=headers)


def install(app: FastAPI) -> None:
    async def on_auth_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        return auth_error_response(exc)

    app.add_exception_handler(AuthError, on_auth_error)


# --- audit -------------------------------------------------------------------------------

ID_FIELDS = ("memory_id", "handoff_id")
_BODY_IDS = "audit_body_ids"
_LIST_FIELDS = ("results", "items", "handoffs")


def resource_ids(path_params: Mapping[str, Any], query: Iterable[tuple[str, str]], body: Any) -> list[str]:
    """Ids a request touched: from the path, the query and the response (top level and its result
    lists). Only id fields are read; nothing else of the response reaches the audit entry."""
    ids = [str(v) for k, v in path_params.items() if k in ID_FIELDS]
    ids += [v for k, v in query if k in ID_FIELDS]
    return ids + body_ids(body)


def query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)`, as
    Starlette parses query strings, once per request and without its per-call overhead."""
    out = []
    for part in query_string.decode("latin-1").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "+" in name or "%" in name:
            name = unquote_plus(name)
        if "+" in value or "%" in value:
            value = unquote_plus(value)
        out.append((name, value))
    return out


def body_ids(body: Any) -> list[str]:
    ids: list[str] = []
    if isinstance(body, dict):
        ids += [str(body[f]) for f in ID_FIELDS if isinstance(body.get(f), str)]
        for name in _LIST_FIELDS:
            items = body.get(name)
            if isinstance(items, list):
                ids += [str(i[f]) for i in items if isinstance(i, dict) for f in ID_FIELDS if isinstance(i.get(f), str)]
    return ids


def note_response_body(scope: Scope, body: Any) -> None:
    """A route that builds its JSON body hands the audit entry the body's ids here, so the audit
    middleware need not buffer and re-parse the response (search and context answers are large)."""
    scope.setdefault("state", {})[_BODY_IDS] = body_ids(body)


class AuditMiddleware:
    """Gives every request an id (X-Request-ID, echoed) and, once a request has been attributed to
    a principal, submits its audit entry when the response is done — whatever its status."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        incoming = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else unique_id()
        state["request_id"] = request_id
        token = CURRENT_REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        chunks: list[bytes] = []
        size = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            elif (
                message["type"] == "http.response.body"
                and "audit" in state
                and _BODY_IDS not in state
                and size <= self.max_body_bytes
            ):
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            CURRENT_REQUEST_ID.reset(token)
            ctx = state.get("audit")
            if isinstance(ctx, AuditContext):
                latency_ms = (time.perf_counter() - started) * 1000
                self._submit(scope, ctx, status, latency_ms, request_id, state.get(_BODY_IDS), chunks, size)

    def _submit(
        self,
        scope: Scope,
        ctx: AuditContext,
        status: int,
        latency_ms: float,
        request_id: str,
        noted: list[str] | None,
        chunks: list[bytes],
        size: int,
    ) -> None:
        security: Security | None = getattr(scope["app"].state, "security", None)
        if security is None or security.audit is None:
            return
        body: Any = None
        if noted is None and chunks and size <= self.max_body_bytes:
            try:
                body = orjson.loads(b"".join(chunks))
            except orjson.JSONDecodeError:
                body = None
        query = query_pairs(scope.get("query_string") or b"")
        entry = audit_entry(
            ctx.principal,
            ctx.action,
            status_code=status,
            latency_ms=latency_ms,
            request_id=request_id,
            resource_type=ctx.action.value.split(".", 1)[0],
            resource_ids=resource_ids(scope.get("path_params") or {}, query, body) + (noted or []),
            details={"route": ctx.route, "method": ctx.method},
        )
        security.audit.submit(entry)
