"""The published JSON Schemas (schemas/*.schema.json) are the models' own: `make schema` regenerates them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from app.auth.audit import audit_entry
from app.auth.principal import Principal
from app.models import DeadLetter, MemoryRecord, SourcePosition
from app.schema import NAMES, render

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas"


@pytest.mark.parametrize("name", NAMES)
def test_schema_file_matches_its_model(name: str) -> None:
    path = SCHEMAS / f"{name}.schema.json"
    assert path.exists(), f"{path.name} is missing: run `make schema`"
    assert path.read_text(encoding="utf-8") == render(name), f"{path.name} is stale: run `make schema`"


def test_every_schema_file_has_a_model() -> None:
    assert {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} == set(NAMES)


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_a_record_as_published_satisfies_the_record_schema() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    record = MemoryRecord(
        tenant_id="acme",
        memory_id="m-1",
        version="0" * 32,
        event_id="e-1",
        type="decision",
        key="db",
        content={"text": "Use Snowflake"},
        occurred_at=now,
        created_at=now,
        updated_at=now,
        source=SourcePosition(topic="memory.events", partition=0, offset=7),
    )
    validator = _validator("memory-record")
    validator.validate(json.loads(record.to_json()))
    broken = json.loads(record.to_json()) | {"version": "7"}
    assert not validator.is_valid(broken)


def test_a_dead_letter_satisfies_the_dead_letter_schema() -> None:
    letter = DeadLetter(reason="invalid JSON", stage="validate", original_b64="e30=", tenant_id=None)
    validator = _validator("dead-letter")
    validator.validate(json.loads(letter.model_dump_json()))
    assert not validator.is_valid(json.loads(letter.model_dump_json()) | {"extra": 1})


def test_an_audit_entry_satisfies_the_audit_schema() -> None:
    principal = Principal(tenant_id="acme", principal_id="key:abc", roles=frozenset({"reader"}), kind="api_key")
    entry = audit_entry(principal, "memory.retrieve", status_code=200, latency_ms=1.5, resource_ids=["m-1"])
    validator = _validator("audit-entry")
    validator.validate(json.loads(entry.to_json()))
    assert not validator.is_valid(json.loads(entry.to_json()) | {"status_code": 99})
