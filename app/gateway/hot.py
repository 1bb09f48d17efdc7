"""The per-turn reads (retrieve, search, context) served as plain ASGI, past FastAPI's router.

Agents call these on every turn. FastAPI's per-request machinery — matching across included
routers, dependency solving, parameter extraction, its exception middlewares — costs as much as
a retrieve's own work (docs/performance.md). `HotReads` sits inside the gateway's middlewares
(request metrics, body limit, request id and audit all apply) and answers these three GETs
itself, with the same parts the FastAPI routes use: the route's query model validates the
parameters, the one `Security` object authenticates, rate-limits and authorizes, the route's
reply function does the work, and errors come out in the same shape and status. The FastAPI
routes stay registered: they describe these endpoints in the OpenAPI document and serve them when
MEMSTREAM_GATEWAY_FAST_READS is off (tests hold both paths to the same answers).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.asgi import Security, auth_error_response, query_pairs
from app.auth.endpoints import API
from app.auth.errors import AuthError
from app.auth.principal import Principal
from app.gateway.deps import Services
from app.gateway.errors import ApiError, error_response, field_errors, hotset_unavailable, single_valued
from app.gateway.routes_context import context_reply
from app.gateway.routes_memory import retrieve_reply, search_reply
from app.gateway.schemas import ContextQuery, RetrieveQuery, SearchQuery

log = logging.getLogger(__name__)
Reply = Callable[[Scope, Principal, Services, Any], Awaitable[Response]]


@dataclass(frozen=True)
class HotRead:
    path: str  # the route template: request metrics and RBAC read it from scope["route"].path
    query: type[BaseModel]  # the FastAPI route's query model
    reply: Reply  # the FastAPI route's reply function


HOT_READS = {
    r.path: r
    for r in (
        HotRead(f"{API}/memory/retrieve", RetrieveQuery, retrieve_reply),
        HotRead(f"{API}/memory/search", SearchQuery, search_reply),
        HotRead(f"{API}/context", ContextQuery, context_reply),
    )
}


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a proxy mounts the gateway under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class HotReads:
    def __init__(self, app: ASGIApp, reads: Mapping[str, HotRead] = HOT_READS) -> None:
        self.app = app
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_get = scope["type"] == "http" and scope["method"] == "GET"
        hot = self.reads.get(_route_path(scope)) if is_get else None
        if hot is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = hot  # where FastAPI's router puts the matched route
        response = await self._answer(hot, scope, receive)
        await response(scope, receive, send)

    async def _answer(self, hot: HotRead, scope: Scope, receive: Receive) -> Response:
        # In FastAPI's order: the credential (a dependency) before the query parameters.
        state = scope["app"].state
        security: Security = state.security
        try:
            pairs = query_pairs(scope["query_string"])
            single_valued(pairs)  # a route dependency, so before the credential, as FastAPI does
            caller = await security.authenticate(Request(scope, receive))
            try:
                query = hot.query.model_validate(dict(pairs))
            except ValidationError as exc:
                details = field_errors(exc.errors(include_url=False), ("query",))
                return error_response(422, "request validation failed", details=details)
            return await hot.reply(scope, caller, state.services, query)
        except AuthError as exc:
            return auth_error_response(exc)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.code, exc.details)
        except RedisError as exc:
            return hotset_unavailable(exc)
        except Exception:  # what FastAPI's ServerErrorMiddleware does for the routes behind it
            log.exception("unhandled error on GET %s", scope["path"])
            return error_response(500, "internal error")
