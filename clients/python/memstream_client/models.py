"""Typed results and requests of the HTTP API v2, mirroring the gateway's models
(a test holds them to the gateway's OpenAPI document). Results accept fields they do not know,
so a newer gateway does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MemoryType = Literal["event", "decision", "rule", "identity", "task", "summary", "chunk", "handoff"]
Visibility = Literal["public", "internal", "private"]
Source = Literal["hotset", "warehouse"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests ---------------------------------------------------------------------------------


class Channel(_Request):
    id: str
    visibility: Visibility = "private"


class StoreRequest(_Request):
    """One memory event without `tenant_id` (the gateway takes it from the credential).

    `event_id` is the idempotency key: the client fills in a random one when it is left out, so
    a retried store is the same write."""

    schema_version: Literal[1] = 1
    event_id: str | None = None
    op: Literal["upsert", "delete"] = "upsert"
    tenant_id: str | None = None
    memory_id: str | None = None
    type: MemoryType | None = None
    key: str | None = None
    content: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    channel: Channel | None = None
    citations: list[str] | None = None
    importance: float | None = None
    ttl_seconds: int | None = None
    occurred_at: datetime | None = None
    remember: bool | None = None


class HandoffRequest(_Request):
    to_agent: str
    task: str
    text: str | None = None
    from_agent: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    channel: Channel | None = None
    metadata: dict[str, Any] | None = None
    citations: list[str] | None = None
    importance: float | None = None
    event_id: str | None = None


class HandoffAckRequest(_Request):
    agent_id: str | None = None
    note: str | None = None


# Results ----------------------------------------------------------------------------------


class SourcePosition(_Result):
    topic: str
    partition: int
    offset: int


class MemoryRecord(_Result):
    """The canonical record, as the hotset, `memory.records` and the warehouse hold it."""

    tenant_id: str
    memory_id: str
    version: str
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
    request_id: str | None = None  # the gateway request that wrote it (X-Request-ID)

    @property
    def text(self) -> str:
        return str((self.content or {}).get("text", ""))


class StoreResult(_Result):
    event_id: str
    memory_id: str
    topic: str
    partition: int
    offset: int
    version: str
    status: Literal["accepted", "visible", "skipped"]


class BatchItemOk(StoreResult):
    index: int


class BatchItemError(_Result):
    index: int
    status: int
    error: dict[str, Any]


class BatchResult(_Result):
    accepted: int
    rejected: int
    items: list[BatchItemOk | BatchItemError]


class Staleness(_Result):
    reason: str


class RetrieveResult(_Result):
    source: Source
    record: MemoryRecord
    stale: Staleness | None = None  # a summary whose cited memories were deleted or superseded since


class SearchHit(_Result):
    memory_id: str
    score: float
    relevance: float
    recency: float
    importance: float
    source: Source
    record: MemoryRecord


class SearchResult(_Result):
    query: str
    terms: list[str]
    results: list[SearchHit]
    candidates_examined: int
    candidate_pool: int
    sources: list[Source]
    warehouse: Literal["used", "not_needed", "unavailable"]
    mode: Literal["keyword", "semantic", "hybrid"] = "keyword"  # absent from gateways without vectors
    candidates: dict[str, int] = Field(default_factory=dict)  # per search mode used: candidates examined


class ContextItemOut(_Result):
    memory_id: str
    section: str
    type: str | None
    key: str | None
    text: str
    status: str | None = None
    agent_id: str | None = None
    occurred_at: datetime
    tokens: int


class ContextResult(_Result):
    session_id: str | None
    agent_id: str | None
    budget_tokens: int
    used_tokens: int
    token_counting: str
    items: list[ContextItemOut]
    omitted: dict[str, int] = Field(default_factory=dict)  # per section, items in scope left out
    warehouse_consulted: bool = False

    def as_prompt(self) -> str:
        """The items as prompt lines, in the gateway's order."""
        return "\n".join(f"[{i.section}] {i.text}" for i in self.items)


class HandoffReference(_Result):
    memory_id: str
    status: Literal["available", "deleted", "missing"]
    type: str | None = None
    text: str | None = None


class HandoffOut(_Result):
    handoff_id: str
    to_agent: str
    from_agent: str | None
    task: str
    text: str
    session_id: str | None
    occurred_at: datetime
    acked: bool
    references: list[HandoffReference] = Field(default_factory=list)
    record: MemoryRecord


class HandoffList(_Result):
    to_agent: str
    handoffs: list[HandoffOut]
    next_cursor: str | None = None  # pass as `cursor=` for the next page


class HandoffAckResult(_Result):
    handoff_id: str
    acked: bool
    event_id: str
    partition: int
    offset: int


class DependencyState(_Result):
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None


class ReadyResult(_Result):
    status: Literal["ok", "degraded"]
    checks: dict[str, DependencyState]
    reason: str | None = None  # why `degraded`: the warehouse is down or the hotset is cold


class HealthResult(_Result):
    status: Literal["ok"]


class StatsResult(_Result):
    tenant_id: str
    counts_by_type: dict[str, int]
    counters: dict[str, int]
    hotset_size: int
    hotset_by_type: dict[str, int]
    cache: dict[str, float | int]
    consumer_lag: dict[str, Any]
    dead_letters: int
    sink_lag: dict[str, Any]


class ErasureResult(_Result):
    """POST /api/v2/admin/erasure (admin role): what was found and erased, per store."""

    tenant_id: str
    subject_type: str
    memories: int
    stores: dict[str, dict[str, Any]]
    audit_log_id: str
    seconds: float
