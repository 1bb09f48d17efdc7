"""The sink's error policy (pure): what a failed write means, and a short reason for a dead letter."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError
from snowflake.connector.errors import (
    DataError,
    HttpError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from snowflake.connector.errors import Error as SnowflakeError

ErrorKind = Literal["data", "transient", "systemic"]
# The session is gone or expired (after a warehouse restart): log in again.
_SESSION_GONE = (390111, 390112, 390114)


def classify(exc: BaseException) -> ErrorKind:
    """`data`: these rows can never be written (bisect, dead-letter); `transient`: the warehouse
    or the network failed (reconnect, retry); `systemic`: anything else, e.g. a missing table
    before `memstream migrate` (retry with backoff, never dead-letter the stream for it)."""
    if isinstance(exc, ProgrammingError | DataError | IntegrityError):
        state = getattr(exc, "sqlstate", None) or ""
        if state[:2] in ("22", "23"):
            return "data"
        if getattr(exc, "errno", None) in _SESSION_GONE:
            return "transient"
        return "systemic"
    if isinstance(exc, OperationalError | InterfaceError | HttpError | OSError):
        return "transient"
    # InternalServerError, ServiceUnavailableError, ... (HTTP 5xx) subclass the connector's Error.
    if isinstance(exc, SnowflakeError):
        return "transient"
    return "systemic"


def reason(exc: BaseException) -> str:
    """Why a value or row was rejected: the model's first errors, or the warehouse's message."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False)[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"[:2000]
