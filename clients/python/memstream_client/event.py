"""The memory event as producers publish it on `memory.events` (the contract, section 1), checked
before it leaves the process. A test holds its JSON Schema to schemas/memory-event.schema.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

MAX_TEXT_BYTES = 64 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_TTL_SECONDS = 10 * 365 * 86400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MemoryType(StrEnum):
    EVENT = "event"
    DECISION = "decision"
    RULE = "rule"
    IDENTITY = "identity"
    TASK = "task"
    SUMMARY = "summary"
    CHUNK = "chunk"
    HANDOFF = "handoff"


Visibility = Literal["public", "internal", "private"]
TaskStatus = Literal["open", "in_progress", "blocked", "done"]
Id128 = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
Scope = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
TenantId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
RequestId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Importance = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1)]


def _rfc3339_only(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("occurred_at must be an RFC 3339 timestamp string")
    return value


def _int_only(value: Any) -> Any:
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


def _after_epoch(value: datetime) -> datetime:
    if value < EPOCH:
        raise ValueError("occurred_at must not be before 1970-01-01T00:00:00Z")
    return value


EventTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only), AfterValidator(_after_epoch)]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_int_only)]
TtlSeconds = Annotated[StrictInt, Field(gt=0, le=MAX_TTL_SECONDS)]


def _portable(value: Any) -> None:
    """Integers beyond 64 bits are refused: the worker's JSON codec cannot read them."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("integer beyond 64 bits")
    if isinstance(value, dict):
        for v in value.values():
            _portable(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _portable(v)


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
    visibility: Visibility = "private"


class Content(BaseModel):
    """Memory content. `text` is required on upserts; other fields are type specific."""

    model_config = ConfigDict(extra="allow", frozen=True)

    text: Annotated[str, StringConstraints(strict=True)]
    status: TaskStatus | None = None
    to_agent: Scope | None = None
    task: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _text_size(self) -> Content:
        if len(self.text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise ValueError(f"content.text exceeds {MAX_TEXT_BYTES} bytes")
        return self


class MemoryEvent(BaseModel):
    """One memory write as published on `memory.events`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="MemoryEvent")

    schema_version: SchemaVersion
    event_id: Id128
    op: Literal["upsert", "delete"] = "upsert"
    tenant_id: TenantId
    memory_id: Id128 | None = None
    type: MemoryType | None = None
    key: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)] | None = None
    content: Content | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    agent_id: Scope | None = None
    user_id: Scope | None = None
    session_id: Scope | None = None
    channel: Channel | None = None
    citations: list[Id128] | None = None
    importance: Importance | None = None
    ttl_seconds: TtlSeconds | None = None
    occurred_at: EventTime
    remember: StrictBool = True
    request_id: RequestId | None = None  # correlates the event with the request that wrote it

    @model_validator(mode="after")
    def _rules(self) -> MemoryEvent:
        try:
            _portable(self.metadata)
            size = len(json.dumps(self.metadata, ensure_ascii=False, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not portable JSON: {exc}") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata exceeds {MAX_METADATA_BYTES} bytes")
        if self.op == "delete":
            if self.memory_id is None:
                raise ValueError("delete needs memory_id")
            return self
        if self.type is None:
            raise ValueError("type is required on upsert")
        if self.content is None:
            raise ValueError("content is required on upsert")
        if self.type is MemoryType.TASK and self.content.status is None:
            raise ValueError("task content needs status (open, in_progress, blocked, done)")
        if self.type is MemoryType.HANDOFF and (self.content.to_agent is None or self.content.task is None):
            raise ValueError("handoff content needs to_agent and task")
        if self.type is MemoryType.SUMMARY and not self.citations:
            raise ValueError("summary needs a non-empty citations list")
        return self

    def to_json(self) -> bytes:
        """The event's bytes on the topic: unset optional fields left out."""
        return self.model_dump_json(exclude_none=True).encode()
