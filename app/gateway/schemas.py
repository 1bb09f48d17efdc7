"""Request and response models of the HTTP API. Strict everywhere: pydantic's lax mode would turn
JSON `true` into 1 and query `0` into False, which the contract forbids. FastAPI validates bodies
from Python objects (not JSON), where model-wide strict mode would reject enums and timestamps
given as strings, so strictness is per field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from app.gateway.context import TOKEN_COUNTING
from app.models import (
    Channel,
    Content,
    EventTime,
    Id128,
    MemoryRecord,
    MemoryType,
    SchemaVersion,
    Scope,
    TenantId,
    TtlSeconds,
    Visibility,
)

# app.models.Importance puts its bounds outside the union, where the JSON Schema loses them.
Importance = Annotated[StrictInt, Field(ge=0, le=1)] | Annotated[StrictFloat, Field(ge=0, le=1)]
Timestamp = EventTime

_INT_RE = re.compile(r"^-?[0-9]{1,18}$")


def query_int(value: Any) -> Any:
    if isinstance(value, str) and not _INT_RE.match(value):
        raise ValueError("must be an integer")
    return value


def _query_bool(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value == "true"
    return value


# Query parameter types: digits only for ints, exactly "true"/"false" for booleans.
QueryInt = Annotated[int, BeforeValidator(query_int)]
Limit100 = Annotated[int, Field(ge=1, le=100), BeforeValidator(query_int)]
Budget = Annotated[int, Field(ge=1, le=200_000), BeforeValidator(query_int)]  # constraints first: JSON schema
QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
QueryId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def _encodable(model: BaseModel) -> None:
    # Free-form JSON (metadata, content extras) may hold integers beyond 64 bits, which orjson
    # (the event encoder, and the worker's size check) cannot write: refuse them here.
    try:
        orjson.dumps(model.model_dump(mode="json"))
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"not encodable as event JSON: {exc}") from exc


class EventFields(BaseModel):
    """The event of docs/contract.md §1 minus `tenant_id`, which comes from the credentials."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _json_safe(self) -> EventFields:
        _encodable(self)
        return self

    schema_version: SchemaVersion = 1
    event_id: Id128 | None = Field(None, description="idempotency key; generated (uuid4) when omitted")
    op: Literal["upsert", "delete"] = "upsert"
    tenant_id: TenantId | None = Field(None, description="optional; must equal the caller's tenant")
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
    occurred_at: Timestamp | None = Field(None, description="RFC 3339; the gateway's clock when omitted")
    remember: StrictBool = True


class StoreRequest(EventFields):
    pass


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Each item is validated as a StoreRequest by the route, so that one bad item is reported in
    # the per-item results instead of rejecting the batch; the document describes them as such.
    items: Annotated[
        list[Any],
        WithJsonSchema(
            {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/StoreRequest"}},
        ),
    ] = Field(min_length=1, description="at most MEMSTREAM_GATEWAY_BATCH_MAX_ITEMS")


WriteStatus = Literal["accepted", "visible", "skipped"]


class StoreResult(BaseModel):
    event_id: str
    memory_id: str
    topic: str
    partition: int
    offset: int = Field(
        description="the tenant's own write sequence number (-1: not known); never the shared Kafka offset"
    )
    version: str = Field(description="the version this write gets in the hotset and the warehouse")
    status: WriteStatus = Field(
        description="accepted: acknowledged by the broker; visible: readable (wait=visible); "
        "skipped: processed but not stored (duplicate, not remembered, or older than what is stored)"
    )


class BatchItemError(BaseModel):
    index: int
    status: int
    error: dict[str, Any]


class BatchItemOk(StoreResult):
    index: int


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    items: list[BatchItemOk | BatchItemError]


# Query parameters of the reads, as models: FastAPI describes them in the OpenAPI document (one
# parameter per field) and app.gateway.hot validates with the same models.
class ReadQuery(BaseModel):
    # A misspelt parameter is refused, not ignored: `channel_visiblity=public` would otherwise
    # read as no restriction at all. Each may be given once (app.gateway.errors.single_valued).
    model_config = ConfigDict(extra="forbid")


class RetrieveQuery(ReadQuery):
    memory_id: QueryId
    memory_type: MemoryType | None = Field(None, description="404 unless the memory has this type")
    channel_visibility: Visibility | None = Field(
        None, description="visibility of the channel the read is for: 404 for a memory it may not see"
    )


class SearchQuery(ReadQuery):
    q: Annotated[str, Field(min_length=1, max_length=512, description="keywords (same tokenizer as indexing)")]
    type: MemoryType | None = None
    session_id: QueryId | None = None
    agent_id: QueryId | None = None
    channel_visibility: Visibility | None = Field(
        None, description="visibility of the channel the read is for; public sees public only"
    )
    limit: Limit100 = 10
    include_superseded: QueryBool = False
    fallback: QueryBool = Field(True, description="false: answer from the hotset only")
    mode: Literal["keyword", "semantic", "hybrid"] | None = Field(
        None,
        description="keyword (BM25), semantic (vectors) or hybrid (both, fused); default: hybrid when the "
        "tenant has vectors, else keyword",
    )


class ContextQuery(ReadQuery):
    session_id: QueryId | None = None
    agent_id: QueryId | None = None
    channel_visibility: Visibility | None = None
    budget_tokens: Budget = Field(2000, description=TOKEN_COUNTING)


class SubscribeQuery(ReadQuery):
    type: MemoryType | None = None
    session_id: QueryId | None = None
    agent_id: QueryId | None = Field(None, description="the agent's memories, and handoffs from or to it")
    channel_visibility: Visibility | None = Field(
        None, description="visibility of the channel the feed is for; public sees public only"
    )


class HandoffListQuery(ReadQuery):
    to_agent: QueryId
    include_acked: QueryBool = False
    channel_visibility: Visibility | None = None
    limit: Limit100 = 20
    cursor: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        None, description="`next_cursor` of the previous page"
    )


class Staleness(BaseModel):
    reason: str


class RetrieveResult(BaseModel):
    source: Literal["hotset", "warehouse"]
    record: MemoryRecord
    stale: Staleness | None = Field(
        None, description="a summary whose cited memories were deleted or superseded since: why"
    )


class SearchHit(BaseModel):
    memory_id: str
    score: float
    relevance: float
    recency: float
    importance: float
    source: Literal["hotset", "warehouse"]
    record: MemoryRecord


class SearchResult(BaseModel):
    query: str
    terms: list[str]
    results: list[SearchHit]
    candidates_examined: int
    candidate_pool: int
    sources: list[Literal["hotset", "warehouse"]]
    warehouse: Literal["used", "not_needed", "unavailable"]
    mode: Literal["keyword", "semantic", "hybrid"] = Field("keyword", description="the mode that answered")
    candidates: dict[str, int] = Field(
        default_factory=dict, description="per search mode used (keyword, semantic): candidates it examined"
    )


class ContextItemOut(BaseModel):
    memory_id: str
    section: Literal["identity", "rules", "decisions", "tasks", "summary", "recent"]
    type: str | None
    key: str | None
    text: str
    status: str | None = None
    agent_id: str | None = None
    occurred_at: datetime
    tokens: int


class ContextResult(BaseModel):
    session_id: str | None
    agent_id: str | None
    budget_tokens: int
    used_tokens: int
    token_counting: str
    items: list[ContextItemOut]
    omitted: dict[Literal["identity", "rules", "decisions", "tasks", "summary", "recent"], int] = Field(
        description="per section, items in scope left out (budget, a stale summary, entries not read)"
    )
    warehouse_consulted: bool = Field(
        description="true when active memories whose hotset copy expired were read from the warehouse"
    )


class HandoffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _json_safe(self) -> HandoffRequest:
        _encodable(self)
        return self

    to_agent: Scope
    task: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)]
    text: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=16384)] | None = Field(
        None, description="the packet: what the receiving agent needs to know (defaults to the task)"
    )
    from_agent: Scope | None = None
    session_id: Scope | None = None
    user_id: Scope | None = None
    channel: Channel | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    citations: list[Id128] | None = Field(
        None, description="references: memory ids the receiver should read (resolved in its inbox)"
    )
    importance: Importance | None = None
    event_id: Id128 | None = None


class HandoffAckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: Scope | None = Field(None, description="the acknowledging agent; must be the recipient")
    note: Annotated[str, StringConstraints(strict=True, max_length=4096)] | None = None


class HandoffReference(BaseModel):
    memory_id: str
    status: Literal["available", "deleted", "missing"] = Field(
        description="missing: neither the hotset nor the warehouse holds it (or it is not visible to the channel)"
    )
    type: str | None = None
    text: str | None = None


class HandoffOut(BaseModel):
    handoff_id: str
    to_agent: str
    from_agent: str | None
    task: str
    text: str
    session_id: str | None
    occurred_at: datetime
    acked: bool
    references: list[HandoffReference] = Field(description="the packet's cited memories, resolved")
    record: MemoryRecord


class HandoffList(BaseModel):
    to_agent: str
    handoffs: list[HandoffOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class HandoffAckResult(BaseModel):
    handoff_id: str
    acked: bool
    event_id: str
    partition: int
    offset: int = Field(description="the tenant's own write sequence number (-1: not known)")


class DependencyState(BaseModel):
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None


class ReadyResult(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, DependencyState]
    reason: str | None = None


class HealthResult(BaseModel):
    status: Literal["ok"]


class StatsResult(BaseModel):
    tenant_id: str
    counts_by_type: dict[str, int] = Field(
        description="memories written per type, counted once per memory id; deletes and expiry are not subtracted"
    )
    counters: dict[str, int]
    hotset_size: int = Field(
        description="memories in the recency index (may include expired or deleted ones until a read prunes them)"
    )
    hotset_by_type: dict[str, int] = Field(description="the same, per type index")
    cache: dict[str, float | int]
    consumer_lag: dict[str, Any] = Field(
        description='the ingest pipeline: {"status": "caught_up" | "behind" | "unknown"}; no figures (they count '
        "every tenant's writes)"
    )
    dead_letters: int = Field(description="this tenant's events the worker refused (memory.deadletter)")
    sink_lag: dict[str, Any] = Field(description="the warehouse sink, as consumer_lag")


class SubjectRequest(BaseModel):
    """A data subject within the caller's tenant (erasure and export)."""

    model_config = ConfigDict(extra="forbid")

    subject_type: Literal["user_id", "agent_id", "session_id"] = Field(
        description="which id names the subject: `user_id`, `agent_id` or `session_id`"
    )
    subject_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]


class ErasureRequest(SubjectRequest):
    wait_s: Annotated[float, Field(ge=0, le=60, strict=False)] = Field(
        0.0, description="wait up to this long for the worker to tombstone every memory in the hotset"
    )


class ErasureResult(BaseModel):
    tenant_id: str
    subject_type: str
    memories: int = Field(description="live memories of the subject found across the stores")
    stores: dict[str, dict[str, Any]] = Field(description="per store: what was found and erased")
    audit_log_id: str
    seconds: float
