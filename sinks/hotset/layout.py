"""The value of a memory in the Redis hotset: one string per memory (key: `keys.memory`).

    <version: 32 digits><deleted: "0" | "1"><record JSON>\\x1e<superseded_by, may be empty>

One string rather than a hash so that reading many memories is a single MGET, far cheaper in Redis
time per memory than a Lua loop of HMGETs (docs/performance.md). The version is fixed-width
(app.models.VERSION_WIDTH), so the Lua writers compare it with GETRANGE 0 31 without reading the
record. JSON never holds a raw control character, so the first \\x1e after the
header ends the record and whatever follows is the id of the memory that superseded this one.

A conversation turn's record JSON carries one field memory.records does not: CONTEXT_TERMS, the
terms it is indexed by from the previous turn of its session (app.text.contextual_terms), so that
the gateway's BM25 scores what the postings found; readers drop it from the record they return.

The Lua writers (scripts Lua.APPLY and Lua.REWARM) build the same layout; tests hold them to
`encode` and `decode` here. A value not in this layout (written by something else)
reads as absent and is overwritten by the next write or re-warm of that memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from app.models import VERSION_WIDTH

CONTEXT_TERMS = "context_terms"

SEP = "\x1e"
_FLAG = VERSION_WIDTH  # index of the deleted flag
_BODY = VERSION_WIDTH + 1  # where the record JSON starts
RECORD_START = _BODY


@dataclass(frozen=True, slots=True)
class StoredMemory:
    version: str
    deleted: bool
    record_json: str  # empty for a tombstone written without a record
    superseded_by: str | None


def encode(version: str, record_json: str, *, deleted: bool = False, superseded_by: str | None = None) -> str:
    if len(version) != VERSION_WIDTH or not version.isdigit():
        raise ValueError(f"version must be {VERSION_WIDTH} digits")
    if SEP in record_json:
        raise ValueError("record JSON holds the separator")
    return f"{version}{'1' if deleted else '0'}{record_json}{SEP}{superseded_by or ''}"


def decode(value: str | None) -> StoredMemory | None:
    """None for an absent key; raises ValueError for a value not in this layout."""
    if not value:
        return None
    cut = value.find(SEP, _BODY)
    if cut < 0 or value[_FLAG] not in "01" or not value[:VERSION_WIDTH].isdigit():
        raise ValueError("not a hotset memory value")
    return StoredMemory(value[:VERSION_WIDTH], value[_FLAG] == "1", value[_BODY:cut], value[cut + 1 :] or None)


def with_context(record_json: str, terms: Sequence[str]) -> str:
    """The record JSON as the hotset holds it: with CONTEXT_TERMS when there are any."""
    if not terms or not record_json.endswith("}"):
        return record_json
    return f'{record_json[:-1]},"{CONTEXT_TERMS}":{orjson.dumps(list(terms)).decode()}}}'


def stored_text(value: str) -> tuple[str, str]:
    """The text and visibility of a live memory's value (("", "") for a tombstone or a value not
    in this layout)."""
    try:
        stored = decode(value)
    except ValueError:
        return "", ""
    if stored is None or stored.deleted or not stored.record_json:
        return "", ""
    try:
        record = orjson.loads(stored.record_json)
    except orjson.JSONDecodeError:
        return "", ""
    content = record.get("content") if isinstance(record, dict) else None
    text = content.get("text") if isinstance(content, dict) else None
    if not isinstance(text, str):
        return "", ""
    return text, str(record.get("visibility") or "private")


def context_of(value: str | None) -> tuple[str, ...]:
    """The CONTEXT_TERMS of a live memory's value (() for none, a tombstone or another layout)."""
    try:
        stored = decode(value)
    except ValueError:
        return ()
    if stored is None or stored.deleted or CONTEXT_TERMS not in stored.record_json:
        return ()
    try:
        terms = orjson.loads(stored.record_json).get(CONTEXT_TERMS)
    except (orjson.JSONDecodeError, AttributeError):
        return ()
    return tuple(t for t in terms if isinstance(t, str)) if isinstance(terms, list) else ()


def canonical_json(record_json: str) -> str:
    """The record as memory.records carries it: the hotset copy without its index-only field."""
    if CONTEXT_TERMS not in record_json:
        return record_json
    record = orjson.loads(record_json)
    record.pop(CONTEXT_TERMS, None)
    return orjson.dumps(record).decode()
