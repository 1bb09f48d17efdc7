"""Process logging: plain text for people, one JSON object per line when MEMSTREAM_LOG_JSON=true.

Every line is scrubbed before it is written: secrets are redacted (`app.redact`) and the input
values pydantic puts in its validation errors (`input_value=…`) are dropped, so that an exception
message or a traceback never carries memory content or a credential into a log.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import orjson

from app.redact import redact_text
from app.settings import Settings

_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=)", re.DOTALL)


def scrub(text: str) -> str:
    """A log line without pydantic input echoes or secrets."""
    if "input_value=" in text:
        text = _PYDANTIC_INPUT.sub("input_value=<hidden>", text)
    return redact_text(text)[0]


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
