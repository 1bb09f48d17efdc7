"""What error tracking sends: exception types and frames, log templates; no values."""

from __future__ import annotations

import orjson

from app.settings import Settings
from app.tracking import SCRUBBED, init_error_tracking, scrub

CONTENT = "my card is 4111 1111 1111 1111 and my diary says hello"


def test_scrub_removes_values_keeps_types_frames_and_templates() -> None:
    event = {
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": CONTENT,
                    "stacktrace": {"frames": [{"function": "prepare", "lineno": 3, "vars": {"text": CONTENT}}]},
                }
            ]
        },
        "logentry": {"message": "ingest failed for %s", "params": [CONTENT], "formatted": CONTENT},
        "message": CONTENT,
        "request": {"data": CONTENT, "headers": {"X-API-Key": "msk_secret"}},
        "breadcrumbs": {"values": [{"message": CONTENT}]},
        "extra": {"sys.argv": [CONTENT]},
        "user": {"ip_address": "127.0.0.1"},
        "contexts": {"trace": {}},
        "level": "error",
    }
    out = scrub(event)
    text = orjson.dumps(out).decode()
    assert CONTENT not in text and "msk_secret" not in text and "127.0.0.1" not in text
    exc = out["exception"]["values"][0]
    assert exc["type"] == "ValueError" and exc["value"] == SCRUBBED
    assert exc["stacktrace"]["frames"] == [{"function": "prepare", "lineno": 3}]
    assert out["logentry"] == {"message": "ingest failed for %s"}
    assert out["level"] == "error"


def test_without_a_dsn_nothing_starts() -> None:
    assert init_error_tracking(Settings(_env_file=None), "gateway") is False  # type: ignore[call-arg]
