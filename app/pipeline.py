"""The ingest policies as pure functions: bytes in, write intents out. No I/O here.

Stages, in order: validate -> redact -> privacy -> dedupe -> supersede -> materialize.
`prepare` does the stateless stages per message; `plan` does the stateful ones for a batch,
given a snapshot of hotset state, and returns intents for the Redis and Kafka adapters.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from app.models import (
    SUPERSEDING_TYPES,
    Content,
    DeadLetter,
    MemoryEvent,
    MemoryRecord,
    MemoryType,
    SourcePosition,
    make_version,
)
from app.redact import (
    count_placeholders,
    find_secret,
    may_contain_secret,
    redact_fields,
    redact_text,
    redact_value,
    refused_identifier,
    strings,
)
from app.text import contextual_terms, digest, index_terms, normalize
from sinks.hotset import keys
from sinks.hotset.state import ActiveEntry, DedupeEntry, HotsetState

ORIGINAL_TEXT_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Incoming:
    """One Kafka message as the worker received it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None  # the broker's (or producer's) message timestamp, if any

    @property
    def position(self) -> SourcePosition:
        return SourcePosition.trusted(self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class Prepared:
    """An event that passed the stateless stages."""

    event: MemoryEvent
    record: MemoryRecord
    redactions: Counter[str]
    dedupe_digest: str | None
    active_field: str | None
    terms: tuple[str, ...]
    dropped: bool  # privacy: marked not to be remembered

    @property
    def turn_of(self) -> tuple[str, str] | None:
        """(tenant, session) when this is a conversation turn, indexed with the turn before it."""
        return turn_scope(self.record)


def _reason(exc: ValidationError) -> str:
    """Where and what kind of error, from pydantic's locations and error types only: its messages
    echo input values. Our own validators' messages (`value_error`) name no values."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"])[:200] or "<root>"
        what = err["msg"] if err["type"] == "value_error" else err["type"]
        parts.append(f"{loc}: {what}")
    return "; ".join(parts)


def _redacted_original(raw: bytes) -> tuple[str, bool]:
    """The payload a dead letter may keep: the redacted text (base64) when `raw` is UTF-8 (JSON is
    redacted value by value, keys and identifiers included), nothing otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", False
    counts: Counter[str] = Counter()
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text, counts = redact_text(text)
    else:
        cleaned = redact_value(parsed, counts)
        if counts:  # otherwise the original text, byte for byte
            text = orjson.dumps(cleaned).decode()
    return base64.b64encode(text.encode()[:ORIGINAL_TEXT_LIMIT]).decode("ascii"), True


def dead_letter(msg: Incoming, reason: str, stage: str, tenant_id: str | None = None) -> DeadLetter:
    """Never the raw bytes: see `_redacted_original`. The reason is redacted too (defence in depth:
    a caller may build it from an exception message)."""
    raw = msg.value or b""
    original, redacted = _redacted_original(raw)
    if tenant_id is not None and find_secret(tenant_id) is not None:
        tenant_id = None
    return DeadLetter(
        reason=redact_text(reason[:2000])[0],
        stage=stage,
        original_b64=original,
        original_redacted=redacted,
        original_bytes=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest(),
        source=msg.position,
        tenant_id=tenant_id,
    )


def validate(msg: Incoming) -> MemoryEvent | DeadLetter:
    """The event, or a dead letter: invalid input, or an identifier holding a secret (refused)."""
    if not msg.value:
        return dead_letter(msg, "empty message", "validate")
    try:
        event = MemoryEvent.model_validate_json(msg.value)
    except (ValidationError, ValueError, TypeError) as exc:
        tenant = None
        try:
            raw = orjson.loads(msg.value)
            if isinstance(raw, dict) and isinstance(raw.get("tenant_id"), str):
                tenant = raw["tenant_id"][:64]
        except orjson.JSONDecodeError:
            pass
        reason = _reason(exc) if isinstance(exc, ValidationError) else type(exc).__name__
        return dead_letter(msg, reason, "validate", tenant)
    refusal = refused_identifier(event_identifiers(event))
    if refusal is not None:
        tenant = None if refusal.field == "tenant_id" else event.tenant_id
        return dead_letter(msg, refusal.reason, "redact", tenant)
    return event


def event_identifiers(event: MemoryEvent) -> list[tuple[str, str]]:
    ids = [
        (f, v)
        for f, v in (
            ("tenant_id", event.tenant_id),
            ("event_id", event.event_id),
            ("memory_id", event.memory_id),
            ("key", event.key),
            ("agent_id", event.agent_id),
            ("user_id", event.user_id),
            ("session_id", event.session_id),
        )
        if v is not None
    ]
    if event.channel is not None:
        ids.append(("channel.id", event.channel.id))
    if event.content is not None and event.content.to_agent is not None:
        ids.append(("content.to_agent", event.content.to_agent))
    if event.citations:
        ids.extend((f"citations.{i}", c) for i, c in enumerate(event.citations))
    return ids


def redact(event: MemoryEvent) -> tuple[MemoryEvent, Counter[str]]:
    """Replace secrets in content (every string, nested, and object keys) and metadata (keys and
    values). The counts go to the record, never the values; they include placeholders already in
    the event (the gateway redacts before it publishes)."""
    counts: Counter[str] = Counter()
    if event.content is None and not event.metadata:
        return event, counts
    if not _has_secret_candidate(event):
        return event, counts
    data: dict[str, Any] = {"metadata": event.metadata}
    if event.content is not None:
        data["content"] = event.content.model_dump(exclude_none=True)
    redacted, found = redact_fields(data)
    counts = count_placeholders([redacted.get("content"), redacted["metadata"]])
    if not found:
        return event, counts
    update: dict[str, object] = {"metadata": redacted["metadata"]}
    if event.content is not None:
        update["content"] = Content.model_validate(redacted["content"])
    return event.model_copy(update=update), counts


def _has_secret_candidate(event: MemoryEvent) -> bool:
    content = event.content
    if (
        not event.metadata
        and content is not None
        and not content.model_extra
        and content.task is None
        and content.to_agent is None
    ):
        return may_contain_secret(content.text)  # the common case: text only
    texts = strings(event.metadata) if event.metadata else []
    if event.content is not None:
        texts.append(event.content.text)
        texts.extend(strings(event.content.model_extra or {}))
        texts.extend(v for v in (event.content.task,) if v)
    return any(may_contain_secret(t) for t in texts)


def future_skew(event: MemoryEvent, timestamp_ms: int | None, max_skew_s: float) -> str | None:
    """Why an event stamped too far ahead of its message's timestamp is refused, or None.

    Supersession orders by `occurred_at`: an event from the future would outrank every later write
    of the same key until its time came. Without a message timestamp there is nothing to compare.
    """
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    ahead_s = event.occurred_at.timestamp() - timestamp_ms / 1000
    if ahead_s <= max_skew_s:
        return None
    return (
        f"occurred_at {event.occurred_at.isoformat()} is {ahead_s:.0f} s ahead of the message timestamp "
        f"(more than the allowed clock skew of {max_skew_s:g} s)"
    )


def tombstone(event: MemoryEvent, pos: SourcePosition) -> MemoryRecord:
    """What a delete leaves: ids, version and deletion time; no content, metadata or subject ids
    (what the hotset, memory.records and the warehouse row keep of a forgotten memory)."""
    version = make_version(event.occurred_at, pos.offset)
    return MemoryRecord.trusted(
        tenant_id=event.tenant_id,
        memory_id=event.resolved_memory_id(),
        version=version,
        event_id=event.event_id,
        type=None,
        key=None,
        content=None,
        metadata={},
        agent_id=None,
        user_id=None,
        session_id=None,
        channel_id=None,
        visibility=event.visibility,
        citations=[],
        importance=None,
        ttl_seconds=None,
        occurred_at=event.occurred_at,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        deleted_at=event.occurred_at,
        superseded_by=None,
        redactions={},
        source=pos,
        request_id=event.request_id,
    )


def to_record(event: MemoryEvent, pos: SourcePosition, redactions: Counter[str]) -> MemoryRecord:
    if event.op == "delete":
        return tombstone(event, pos)
    version = make_version(event.occurred_at, pos.offset)
    metadata = dict(event.metadata)
    if redactions:
        metadata["redactions"] = dict(sorted(redactions.items()))
    # Built from an already validated event: skip re-validation (a hot path).
    return MemoryRecord.trusted(
        tenant_id=event.tenant_id,
        memory_id=event.resolved_memory_id(),
        version=version,
        event_id=event.event_id,
        type=event.type,
        key=event.key,
        content=None if event.content is None else event.content.model_dump(exclude_none=True),
        metadata=metadata,
        agent_id=event.agent_id,
        user_id=event.user_id,
        session_id=event.session_id,
        channel_id=event.channel.id if event.channel else None,
        visibility=event.visibility,
        citations=list(event.citations or []),
        importance=float(event.importance) if event.importance is not None else None,
        ttl_seconds=event.ttl_seconds,
        occurred_at=event.occurred_at,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        deleted_at=None,
        superseded_by=None,
        redactions=dict(redactions),
        source=pos,
        request_id=event.request_id,
    )


def dedupe_digest(event: MemoryEvent) -> str | None:
    """Same normalized text (and, for a task, the same status) in the same tenant and scope ->
    same digest: a task moving from open to done with its text unchanged is a new state, not a
    copy. Handoffs are never duplicates: each packet is a delivery to an agent (a retry repeats
    its event id instead)."""
    if event.op != "upsert" or event.content is None or event.type == MemoryType.HANDOFF:
        return None
    scope = (
        event.type or "",
        event.key or "",
        event.session_id or "",
        event.agent_id or "",
        event.user_id or "",
        event.channel.id if event.channel else "",
        event.visibility,
    )
    if event.type is MemoryType.TASK:
        return digest(event.tenant_id, *scope, event.content.status or "", normalize(event.content.text))
    return digest(event.tenant_id, *scope, normalize(event.content.text))


def record_digest(rec: MemoryRecord) -> str | None:
    """`dedupe_digest` of the event a stored record came from (the record holds the same scope)."""
    text = rec.content.get("text") if rec.content else None
    if rec.deleted or not isinstance(text, str) or rec.type is None or rec.type == MemoryType.HANDOFF:
        return None
    scope = (
        rec.type,
        rec.key or "",
        rec.session_id or "",
        rec.agent_id or "",
        rec.user_id or "",
        rec.channel_id or "",
        rec.visibility,
    )
    return digest(rec.tenant_id, *scope, normalize(text))


def record_terms(rec: MemoryRecord) -> tuple[str, ...]:
    """The keyword terms a stored record was indexed under (as `prepare` derives them)."""
    text = rec.content.get("text") if rec.content else None
    if not isinstance(text, str):
        return ()
    return tuple(index_terms(f"{rec.key or ''} {text}"))


def turn_scope(record: MemoryRecord) -> tuple[str, str] | None:
    """Conversation turns (events of a session with text) are indexed with their session's
    previous turn: (tenant, session) for those, else None."""
    if record.type is not MemoryType.EVENT or not record.session_id or not record.content:
        return None
    return (record.tenant_id, record.session_id)


def prepare(event: MemoryEvent, pos: SourcePosition) -> Prepared:
    event, counts = redact(event)
    record = to_record(event, pos, counts)
    dropped = not event.remember
    active = None
    if event.op == "upsert" and event.type in SUPERSEDING_TYPES and event.key:
        active = keys.active_field(event.type.value, event.key)
    terms: tuple[str, ...] = ()
    if event.content is not None and not dropped:
        terms = tuple(index_terms(f"{event.key or ''} {event.content.text}"))
    return Prepared(
        event=event,
        record=record,
        redactions=counts,
        dedupe_digest=None if dropped else dedupe_digest(event),
        active_field=active,
        terms=terms,
        dropped=dropped,
    )


# ---- stateful stages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """One write for the hotset (and, for `write`/`delete`, one record for `memory.records`)."""

    kind: Literal["write", "delete", "duplicate", "dropped", "replay", "restore", "reindex", "refused"]
    record: MemoryRecord
    counters: dict[str, int]
    terms: tuple[str, ...] = ()
    context_terms: tuple[str, ...] = ()  # of `terms`, those from the session's previous turn
    drop_terms: tuple[str, ...] = ()  # postings the memory leaves (a re-index after a forgotten turn)
    dedupe_digest: str | None = None
    dedupe_value: str | None = None
    active_field: str | None = None
    active_value: str | None = None
    supersedes: str | None = None  # memory id this write makes superseded
    reason: str | None = None  # refused: why (the event goes to the dead-letter topic)
    # A delete: the stored record it forgets (its index entries and dedupe key go with it).
    forgets: MemoryRecord | None = None

    @property
    def publishes(self) -> bool:
        return self.kind in ("write", "delete")

    @property
    def stores(self) -> bool:
        """Carries a record into the hotset (a restore re-warms one from the warehouse)."""
        return self.kind in ("write", "delete", "restore", "reindex")

    @cached_property
    def record_json(self) -> bytes:
        """Serialized once: the same bytes go to memory.records and to the hotset."""
        return self.record.to_json()


def _occurred_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def citation_problem(record: MemoryRecord, state: HotsetState) -> str | None:
    """The drift guard: a summary must cite memories of its tenant that exist and are not deleted.

    Existence is what the hotset holds (or what this batch wrote before it): a cited memory that
    expired from the hotset is not seen here; the gateway's store re-warms cited memories from the
    warehouse before it publishes, so only raw producers citing expired memories are refused.
    """
    if record.type is not MemoryType.SUMMARY:
        return None
    missing = []
    deleted = []
    for cited in dict.fromkeys(record.citations):
        status = state.memories.get((record.tenant_id, cited), "absent")
        if status == "deleted":
            deleted.append(cited)
        elif status != "live":
            missing.append(cited)
    if not missing and not deleted:
        return None
    parts = []
    if missing:
        parts.append(f"not found in tenant {record.tenant_id}: {', '.join(missing[:20])}")
    if deleted:
        parts.append(f"deleted: {', '.join(deleted[:20])}")
    return "summary cites memories " + "; ".join(parts)


def unborrow(forgotten: MemoryRecord, state: HotsetState) -> list[Intent]:
    """A forgotten conversation turn's words leave the index of the next turn of its session,
    which was indexed with them: that turn is re-indexed with the turn before the forgotten one.
    The planner's running previous turn of the session moves back the same way."""
    turn = turn_scope(forgotten)
    if turn is None:
        return []
    near = state.neighbours.get((forgotten.tenant_id, forgotten.memory_id))
    text = str((forgotten.content or {}).get("text", ""))
    if state.previous_turn.get(turn, ("", ""))[0] == text:
        if near is not None and near.before_text:
            state.previous_turn[turn] = (near.before_text, near.before_visibility)
        else:
            state.previous_turn.pop(turn, None)
    if near is None or near.following is None or not near.following_context:
        return []
    lent = set(record_terms(forgotten))
    if not lent & set(near.following_context):
        return []  # the next turn was not indexed with this one's words
    nxt = near.following
    own = record_terms(nxt)
    context = contextual_terms(own, near.before_text) if near.before_visibility == nxt.visibility else ()
    keep = set(own) | set(context)
    drop = tuple(t for t in near.following_context if t not in keep)
    return [Intent("reindex", nxt, {}, terms=own + context, context_terms=context, drop_terms=drop)]


def plan(batch: list[Prepared], state: HotsetState, dedupe_window_s: int) -> list[Intent]:
    """Decide, in order, what each prepared event does to the hotset. `state` is updated in place."""
    out: list[Intent] = []
    window_us = dedupe_window_s * 1_000_000
    # (tenant, session) -> (text, index terms) of a turn of this batch: the next turn takes the
    # terms it lends from here instead of tokenizing the text again.
    turn_terms: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
    for p in batch:
        rec = p.record
        tenant = rec.tenant_id
        if (tenant, rec.event_id) in state.seen:
            # The idempotency key: a re-published or redelivered event changes nothing.
            out.append(Intent("replay", rec, {}))
            continue
        state.seen.add((tenant, rec.event_id))
        redaction_counters = {f"redacted:{k}": v for k, v in p.redactions.items()}
        if p.dropped:
            out.append(Intent("dropped", rec, {"privacy_dropped": 1, **redaction_counters}))
            continue
        if p.event.op == "delete":
            # Everything derived from the stored record goes: postings, indexes, dedupe entry.
            old = state.stored.pop((tenant, rec.memory_id), None)
            if old is not None and old.version >= rec.version:
                old = None  # a newer version stands; this delete changes nothing
            dd = record_digest(old) if old is not None else None
            if dd is not None:
                prior = state.dedupe.get((tenant, dd))
                if prior is not None and prior.memory_id == rec.memory_id:
                    del state.dedupe[(tenant, dd)]
            lent = state.stored_context.get((tenant, rec.memory_id), ())
            out.append(
                Intent(
                    "delete",
                    rec,
                    {"deletes": 1},
                    terms=record_terms(old) + lent if old is not None else (),
                    dedupe_digest=dd,
                    forgets=old,
                )
            )
            state.memories[(tenant, rec.memory_id)] = "deleted"
            if old is not None:
                out.extend(unborrow(old, state))
            continue
        problem = citation_problem(rec, state)
        if problem is not None:
            out.append(Intent("refused", rec, {"refused_citations": 1}, reason=problem))
            continue

        counters = {"writes": 1, **redaction_counters}
        dd_value = None
        if p.dedupe_digest is not None:
            occ = _occurred_us(rec.occurred_at)
            prior = state.dedupe.get((tenant, p.dedupe_digest))
            if prior is not None and prior.memory_id != rec.memory_id and abs(occ - prior.occurred_us) <= window_us:
                out.append(Intent("duplicate", rec, {"dedupes": 1, **redaction_counters}))
                continue
            entry = DedupeEntry(rec.memory_id, occ)
            if prior is None or prior.memory_id != rec.memory_id:
                state.dedupe[(tenant, p.dedupe_digest)] = entry
            dd_value = entry.encode()

        supersedes = None
        active_value = None
        if p.active_field is not None:
            current = state.active.get((tenant, p.active_field))
            mine = ActiveEntry(rec.version, rec.memory_id)
            if current is None or rec.version > current.version:
                state.active[(tenant, p.active_field)] = mine
                active_value = mine.encode()
                if current is not None and current.memory_id != rec.memory_id:
                    supersedes = current.memory_id
                    counters["superseded"] = 1
            elif current.memory_id != rec.memory_id:
                # An older event arriving late never wins: it is born superseded.
                rec = rec.model_copy(update={"superseded_by": current.memory_id})
                counters["superseded"] = 1

        state.memories[(tenant, rec.memory_id)] = "live"
        prior_rec = state.stored.get((tenant, rec.memory_id))
        if prior_rec is None or prior_rec.version < rec.version:
            state.stored[(tenant, rec.memory_id)] = rec
        context: tuple[str, ...] = ()
        turn = p.turn_of
        if turn is not None and p.event.content is not None:
            prev_text, prev_visibility = state.previous_turn.get(turn, ("", ""))
            # Only a turn its readers may see lends terms: a search must not find a public turn by
            # the words of a private one.
            if prev_visibility == rec.visibility:
                known = turn_terms.get(turn)
                prev_terms = known[1] if known is not None and known[0] is prev_text else None
                context = contextual_terms(p.terms, prev_text, prev_terms)
            text = p.event.content.text
            state.previous_turn[turn] = (text, rec.visibility)
            if p.event.key:
                turn_terms.pop(turn, None)  # its terms hold the key's words too
            else:
                turn_terms[turn] = (text, p.terms)
        out.append(
            Intent(
                "write",
                rec,
                counters,
                terms=p.terms + context,
                context_terms=context,
                dedupe_digest=p.dedupe_digest,
                dedupe_value=dd_value,
                active_field=p.active_field,
                active_value=active_value,
                supersedes=supersedes,
            )
        )
    return out


def carried_state(batch: list[Prepared], state: HotsetState) -> HotsetState:
    """The entries a planned batch's hotset write leaves (its dedupe and active entries, events,
    memories and previous turns), from `state` as `plan` left it: what the next batch reads
    before that write lands (`HotsetState.carry`). Only a batch without deletes is carried
    forward: a delete removes entries, which a lay-over cannot express."""
    out = HotsetState()
    for p in batch:
        rec = p.record
        tenant = rec.tenant_id
        if (tenant, rec.event_id) in state.seen:
            out.seen.add((tenant, rec.event_id))
        if p.dedupe_digest is not None and (entry := state.dedupe.get((tenant, p.dedupe_digest))) is not None:
            out.dedupe[(tenant, p.dedupe_digest)] = entry
        if p.active_field is not None and (active := state.active.get((tenant, p.active_field))) is not None:
            out.active[(tenant, p.active_field)] = active
        if (status := state.memories.get((tenant, rec.memory_id))) is not None:
            out.memories[(tenant, rec.memory_id)] = status
        turn = p.turn_of
        if turn is not None and (previous := state.previous_turn.get(turn)) is not None:
            out.previous_turn[turn] = previous
    return out


def record_messages(intents: list[Intent]) -> list[tuple[bytes, bytes | None]]:
    """What `memory.records` receives for a batch, as (key, value), key `tenant/memory_id`: the
    record of each write and delete; after a delete, a tombstone (null value) with the same key,
    so that a compacting broker drops the memory's earlier records."""
    out: list[tuple[bytes, bytes | None]] = []
    for i in intents:
        if not i.publishes:
            continue
        key = f"{i.record.tenant_id}/{i.record.memory_id}".encode()
        out.append((key, i.record_json))
        if i.kind == "delete":
            out.append((key, None))
    return out
