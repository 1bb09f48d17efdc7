"""The public event model (docs/contract.md §1) and the canonical record it becomes."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
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
MAX_TTL_SECONDS = 10 * 365 * 86400  # a hotset TTL beyond ten years is a mistake, not a policy
# Nesting of free-form JSON (metadata, content extras): the worker's JSON parser stops at 200
# levels for the whole event, so the one model both sides validate with refuses far less.
MAX_JSON_DEPTH = 32
# Namespace for memory ids derived from (tenant, event_id); fixed forever.
MEMORY_ID_NAMESPACE = uuid.UUID("5b0e6d1c-7f37-4d0e-9a43-6f1f2d6c7a11")
_NAMESPACE_BYTES = MEMORY_ID_NAMESPACE.bytes


class MemoryType(StrEnum):
    EVENT = "event"
    DECISION = "decision"
    RULE = "rule"
    IDENTITY = "identity"
    TASK = "task"
    SUMMARY = "summary"
    CHUNK = "chunk"
    HANDOFF = "handoff"


SUPERSEDING_TYPES = frozenset({MemoryType.DECISION, MemoryType.RULE, MemoryType.IDENTITY, MemoryType.TASK})

Visibility = Literal["public", "internal", "private"]
TaskStatus = Literal["open", "in_progress", "blocked", "done"]
Id128 = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
Scope = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
TenantId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
# X-Request-ID as the gateway accepts it: carried from the request to the warehouse row.
RequestId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Importance = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1)]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_depth_exceeds(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests objects/arrays more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return False


def _rfc3339_only(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("occurred_at must be an RFC 3339 timestamp string")
    return value


def _int_only(value: Any) -> Any:
    if type(value) is not int:  # JSON true and 1.0 are not the integer 1
        raise ValueError("must be the integer 1")
    return value


def _after_epoch(value: datetime) -> datetime:
    if value < EPOCH:
        raise ValueError("occurred_at must not be before 1970-01-01T00:00:00Z")
    return value


EventTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only), AfterValidator(_after_epoch)]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_int_only)]
TtlSeconds = Annotated[StrictInt, Field(gt=0, le=MAX_TTL_SECONDS)]


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
    # memstream extension: `false` means "do not remember" — the event is dropped and counted.
    remember: StrictBool = True
    # memstream extension: the id of the gateway request that wrote the event (X-Request-ID).
    request_id: RequestId | None = None

    @model_validator(mode="after")
    def _rules(self) -> MemoryEvent:
        if self.metadata:  # most events carry none: skip the walk and the encoding
            if json_depth_exceeds(self.metadata):
                raise ValueError(f"metadata nests deeper than {MAX_JSON_DEPTH} levels")
            try:
                size = len(orjson.dumps(self.metadata))
            except orjson.JSONEncodeError as exc:  # e.g. integers beyond 64 bits
                raise ValueError(f"metadata is not portable JSON: {exc}") from None
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"metadata exceeds {MAX_METADATA_BYTES} bytes")
        if self.content is not None and self.content.model_extra and json_depth_exceeds(self.content.model_extra):
            raise ValueError(f"content nests deeper than {MAX_JSON_DEPTH} levels")
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

    @property
    def visibility(self) -> Visibility:
        return self.channel.visibility if self.channel else "private"

    def resolved_memory_id(self) -> str:
        return self.memory_id or derive_memory_id(self.tenant_id, self.event_id)


def derive_memory_id(tenant_id: str, event_id: str) -> str:
    """`m-` + the hex of uuid5(MEMORY_ID_NAMESPACE, tenant \x1f event), built without the UUID
    class, which is a large share of the per-event cost of building a record."""
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{tenant_id}\x1f{event_id}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "m-" + h.hex()


VERSION_WIDTH = 32


def make_version(occurred_at: datetime, offset: int) -> str:
    """Total order of writes: event time (µs) first, then the Kafka offset (ties: later offset wins).

    A fixed-width digit string: it compares correctly as text (Redis Lua numbers are doubles,
    JSON consumers lose precision past 2^53) and casts to NUMBER(38,0) in the warehouse.
    """
    micros = int(occurred_at.timestamp() * 1_000_000)
    return f"{micros:018d}{max(offset, 0):014d}"


_M = TypeVar("_M", bound=BaseModel)


class SourcePosition(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int

    @classmethod
    def trusted(cls, topic: str, partition: int, offset: int) -> SourcePosition:
        """From a Kafka message's own coordinates (the ingest hot path): no validation."""
        return _trusted(cls, {"topic": topic, "partition": partition, "offset": offset})


def _trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """What `model_construct` builds when every field is given, without its per-field loop."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class MemoryRecord(BaseModel):
    """The canonical record: what the hotset holds, `memory.records` carries and the warehouse keeps."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    memory_id: str
    version: Annotated[str, StringConstraints(pattern=r"^[0-9]{32}$")]
    event_id: str
    type: MemoryType | None = None
    key: str | None = None
    content: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    channel_id: str | None = None
    visibility: Visibility = "private"
    citations: list[str] = Field(default_factory=list)
    importance: float | None = None
    ttl_seconds: int | None = None
    occurred_at: datetime
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    superseded_by: str | None = None
    redactions: dict[str, int] = Field(default_factory=dict)
    source: SourcePosition | None = None
    request_id: RequestId | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def trusted(cls, **values: Any) -> MemoryRecord:
        """Build from values that are already valid (the ingest hot path): every field must be
        given. Same result as `model_construct`, without its per-field loop."""
        if tuple(values) != _RECORD_FIELDS:  # in order: to_json writes them as given
            raise TypeError(f"trusted() needs exactly the fields, in order: {list(_RECORD_FIELDS)}")
        return _trusted(cls, values)

    def to_json(self) -> bytes:
        """The same bytes as `model_dump_json` (a test pins it), built by orjson without pydantic's serializer."""
        return orjson.dumps(self.__dict__, default=_plain, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes | str) -> MemoryRecord:
        return cls.model_validate_json(data)


# Read once: pydantic's `model_fields` builds its answer on every access.
_RECORD_FIELDS = tuple(MemoryRecord.model_fields)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class DeadLetter(BaseModel):
    """What `memory.deadletter` carries: why, where it came from, and a redacted copy of the input.

    Never the raw bytes: when they decode as UTF-8, `original_b64` is the base64 of the redacted
    text and `original_redacted` is true; otherwise `original_b64` is empty and only the length and
    SHA-256 of the input are kept.
    """

    model_config = ConfigDict(extra="forbid")

    reason: str
    stage: str
    original_b64: str
    original_redacted: bool = False
    original_bytes: int = 0
    original_sha256: str | None = None
    source: SourcePosition | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tenant_id: str | None = None


class AuditEntry(BaseModel):
    """One audited action as `memory.audit` carries it; the fields are the AUDIT_LOGS columns.

    Unknown fields are ignored rather than rejected: a producer that adds a field must not send
    every audit entry to the dead-letter topic of an older sink.
    """

    model_config = ConfigDict(extra="ignore")

    log_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    ts: datetime
    tenant_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    principal: Annotated[str, StringConstraints(max_length=256)] | None = None
    action: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    resource_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    resource_ids: list[str] = Field(default_factory=list)
    success: bool
    status_code: Annotated[int, Field(ge=100, le=599)] | None = None
    latency_ms: Annotated[float, Field(ge=0)] | None = None
    request_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def trusted(cls, **values: Any) -> AuditEntry:
        """Build from values already within the fields' bounds (app.auth.audit.audit_entry, once
        per request): every field, in order. Same result as validating them (a test pins it)."""
        if tuple(values) != _AUDIT_FIELDS:
            raise TypeError(f"trusted() needs exactly the fields, in order: {list(_AUDIT_FIELDS)}")
        return _trusted(cls, values)

    def to_json(self) -> bytes:
        """The same bytes as `model_dump_json` (a test pins it), built by orjson without pydantic's serializer."""
        return orjson.dumps(self.__dict__, default=_plain, option=orjson.OPT_UTC_Z)


_AUDIT_FIELDS = tuple(AuditEntry.model_fields)


def event_json_schema() -> dict[str, Any]:
    return MemoryEvent.model_json_schema()
