"""JSON Schemas of the public payloads, generated from their models (`make schema` writes schemas/).

The event is described as producers must write it (validation); the record, the dead letter and
the audit entry as memstream writes them (serialization: every field is present).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from app.models import AuditEntry, DeadLetter, MemoryRecord, event_json_schema

Mode = Literal["validation", "serialization"]

# file stem in schemas/ -> (model, the side of the wire the schema describes)
PAYLOADS: dict[str, tuple[type[BaseModel], Mode]] = {
    "memory-record": (MemoryRecord, "serialization"),
    "dead-letter": (DeadLetter, "serialization"),
    "audit-entry": (AuditEntry, "serialization"),
}
NAMES = ("memory-event", *PAYLOADS)


def schema(name: str) -> dict[str, Any]:
    if name == "memory-event":
        return event_json_schema()
    model, mode = PAYLOADS[name]
    return model.model_json_schema(mode=mode)


def render(name: str = "memory-event") -> str:
    return json.dumps(schema(name), indent=2, sort_keys=True) + "\n"


def write_all(folder: Path) -> None:
    for name in NAMES:
        (folder / f"{name}.schema.json").write_text(render(name), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        write_all(Path(sys.argv[1]))
    else:
        print(render(), end="")
