"""The error shape of docs/contract.md §7, `{"error": {"code", "message", "details"}}`, for every error."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raise anywhere in a request to answer with the contract's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code or _CODES.get(status, "error"), "message": message, "details": details}}
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json", headers=headers)


def hotset_unavailable(exc: RedisError) -> Response:
    """Redis down or timing out: a dependency is unavailable (503, retry), not a server bug."""
    log.warning("hotset unavailable: %s: %s", type(exc).__name__, exc)
    return error_response(
        503,
        "the hotset (Redis) is unavailable; retry shortly",
        "hotset_unavailable",
        details={"reason": type(exc).__name__},
        headers={"Retry-After": "1"},
    )


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as `{"loc": "body.content.text", "msg", "type"}` (JSON-safe, no input echo)."""
    out = []
    for err in errors:
        loc = (*prefix, *err.get("loc", ()))
        out.append(
            {
                "loc": ".".join(str(p) for p in loc) or "<root>",
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def single_valued(pairs: Iterable[tuple[str, str]]) -> None:
    """422 for a query parameter given more than once: the reads take one value each, and taking
    the last (as frameworks do) let `channel_visibility=public&channel_visibility=private` widen
    a public read."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name, _ in pairs:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        details = [{"loc": f"query.{n}", "msg": "give this parameter once", "type": "repeated"} for n in repeated]
        raise ApiError(422, "request validation failed", details=details)


async def _single_valued_query(request: Request) -> None:
    single_valued(request.query_params.multi_items())


SingleValued = Depends(_single_valued_query)  # on the read routes; app.gateway.hot checks it too


def validation_error(exc: ValidationError, prefix: tuple[str | int, ...] = ("body",)) -> ApiError:
    return ApiError(422, "request validation failed", details=field_errors(exc.errors(include_url=False), prefix))


def install(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.code, exc.details)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, message, headers=dict(exc.headers or {}))

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "request validation failed", details=field_errors(list(exc.errors())))

    async def on_redis(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RedisError)
        return hotset_unavailable(exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(RedisError, on_redis)
    app.add_exception_handler(Exception, on_unexpected)


# OpenAPI: the error responses each route can give, all with the same body.
def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": _CODES.get(s, "error")} for s in statuses}
