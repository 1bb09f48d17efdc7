"""One exception tree. Every error the gateway answers carries the contract's error shape
`{"error": {"code", "message", "details"}}`; its code, message and details are on the exception."""

from __future__ import annotations

from typing import Any


class MemstreamError(Exception):
    """Base of every error raised by memstream_client."""

    def __init__(self, message: str, code: str = "error", details: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.status = status

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class ApiError(MemstreamError):
    """The gateway answered with an error status."""

    retry_after: float | None = None


class BadRequest(ApiError):
    """400"""


class Unauthorized(ApiError):
    """401: no or an invalid credential."""


class Forbidden(ApiError):
    """403: the credential's role or agent scope does not allow the call."""


class NotFound(ApiError):
    """404 (also for another tenant's memory, or one the channel may not see)."""


class Conflict(ApiError):
    """409, e.g. a handoff acknowledged twice (`already_acked`)."""


class PayloadTooLarge(ApiError):
    """413"""


class ValidationFailed(ApiError):
    """422: the request does not match the API's models; `details` lists the fields."""


class RateLimited(ApiError):
    """429: retried with backoff (honouring Retry-After) until the retries are spent."""


class Unavailable(ApiError):
    """503: a dependency is down (broker, hotset) or the gateway is not ready."""


class GatewayTimeout(ApiError):
    """504, e.g. `wait=visible` ran out of time (the write itself was accepted)."""


class TransportError(MemstreamError):
    """The request did not get an answer: connection refused or reset, or a timeout."""


class ProtocolError(MemstreamError):
    """The answer is not what the API describes (not JSON, or not the expected shape)."""


class EventInvalid(MemstreamError):
    """A producer event that fails the client-side model of the memory event."""


class DeliveryFailed(MemstreamError):
    """Events the broker did not acknowledge by the time the producer closed."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
    504: GatewayTimeout,
}


def error_for_status(status: int) -> type[ApiError]:
    return _BY_STATUS.get(status, ApiError)
