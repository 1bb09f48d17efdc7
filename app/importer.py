"""`memstream import FILE.jsonl`: publish memory events from a JSON Lines file.

Each line is one event (docs/contract.md §1). Lines are validated first; valid ones are published
to `memory.events` keyed by tenant with acks=all, invalid ones are reported with their line
number and reason and not published. Secrets are redacted before publishing, and a line whose
identifiers hold one is refused (docs/security.md). Re-importing a file is harmless: event ids are idempotency
keys.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from app.kafka import publish_sync
from app.models import MemoryEvent
from app.pipeline import event_identifiers, redact
from app.redact import refused_identifier
from app.settings import Settings


@dataclass
class ImportReport:
    valid: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)


def read_events(path: Path) -> ImportReport:
    report = ImportReport()
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                event = MemoryEvent.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in first["loc"]) or "<root>"
                report.invalid.append((lineno, f"{loc}: {first['msg']}"))
                continue
            except ValueError as exc:
                report.invalid.append((lineno, str(exc)))
                continue
            refusal = refused_identifier(event_identifiers(event))
            if refusal is not None:
                report.invalid.append((lineno, refusal.reason))
                continue
            redacted, _ = redact(event)
            if redacted is not event:  # the line with its secrets replaced, as the gateway publishes it
                line = orjson.dumps(redacted.model_dump(mode="json", exclude_none=True))
            report.valid.append((event.tenant_id.encode(), line))
    return report


def run_import(settings: Settings, path: Path, dry_run: bool = False) -> int:
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    report = read_events(path)
    for lineno, reason in report.invalid[:50]:
        print(f"{path}:{lineno}: invalid event: {reason}", file=sys.stderr)
    if len(report.invalid) > 50:
        print(f"... and {len(report.invalid) - 50} more invalid lines", file=sys.stderr)
    if not dry_run and report.valid:
        publish_sync(settings, report.valid, settings.topic_events)
    verb = "would publish" if dry_run else "published"
    print(f"{verb} {len(report.valid)} events to {settings.topic_events}; {len(report.invalid)} invalid lines")
    return 1 if report.invalid else 0
