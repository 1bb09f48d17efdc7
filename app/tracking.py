"""Optional error tracking with Sentry (`MEMSTREAM_SENTRY_DSN`).

Without a DSN nothing happens: `sentry_sdk` is not even imported, so no network call can be made.
With one, errors and error logs of the worker and the gateway are sent with their type, stack
(file, function, line) and the log's format string only: everything that may hold memory content
or secrets — exception messages, local variables, log arguments, request data, breadcrumbs, user
and extra data — is removed in `scrub` before an event leaves the process.
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings

SCRUBBED = "[scrubbed]"
# Event keys that may carry content, credentials or personal data: dropped whole.
_DROPPED = ("request", "user", "extra", "breadcrumbs", "contexts", "modules", "tags", "spans")


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event without content (pure): exception types and frames, log templates, no values."""
    for key in _DROPPED:
        event.pop(key, None)
    for exc in (event.get("exception") or {}).get("values") or []:
        if exc.get("value"):
            exc["value"] = SCRUBBED
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    entry = event.get("logentry")
    if isinstance(entry, dict):
        event["logentry"] = {"message": entry.get("message", "")}  # the template, not its arguments
    if "message" in event and "logentry" in event:
        event.pop("message")
    elif isinstance(event.get("message"), str):
        event["message"] = SCRUBBED
    return event


def init_error_tracking(settings: Settings, component: str) -> bool:
    """Start Sentry when a DSN is configured; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.env,
        server_name=component,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        max_breadcrumbs=0,
        traces_sample_rate=0.0,
        before_send=scrub,  # type: ignore[arg-type]
    )
    return True
