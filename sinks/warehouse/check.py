"""The canonical-record check (pure): a record exactly as `MemoryRecord.to_json` writes one, checked
by hand and turned into its MEMORY_RECORDS staging row without building the model.

What the ingest agent publishes has every field, strict JSON types and RFC 3339 times; the sink's
consumer thread spends most of its time validating it, and this check costs less than the model
(docs/warehouse.md). Anything else returns None and goes through the model, which accepts a looser
form or rejects the value with its reason. Everything accepted here is accepted by
`MemoryRecord.from_json` (the same fields, types and constraints) and stages the same row as the
model path: the unit tests compare the two on canonical records and on mutations of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, get_args

import orjson

from app.models import SUPERSEDING_TYPES, MemoryRecord, MemoryType, Visibility

_NONE = type(None)
# MemoryRecord's fields and the JSON types `to_json` writes for each (a unit test holds this to
# the model).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "tenant_id": (str,),
    "memory_id": (str,),
    "version": (str,),
    "event_id": (str,),
    "type": (str, _NONE),
    "key": (str, _NONE),
    "content": (dict, _NONE),
    "metadata": (dict,),
    "agent_id": (str, _NONE),
    "user_id": (str, _NONE),
    "session_id": (str, _NONE),
    "channel_id": (str, _NONE),
    "visibility": (str,),
    "citations": (list,),
    "importance": (float, int, _NONE),
    "ttl_seconds": (int, _NONE),
    "occurred_at": (str,),
    "created_at": (str,),
    "updated_at": (str,),
    "deleted_at": (str, _NONE),
    "superseded_by": (str, _NONE),
    "redactions": (dict,),
    "source": (dict, _NONE),
    "request_id": (str, _NONE),
}
_TIMES = frozenset(
    name for name, f in MemoryRecord.model_fields.items() if datetime in (f.annotation, *get_args(f.annotation))
)
_TYPES = frozenset(t.value for t in MemoryType)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_VISIBILITY = frozenset(get_args(Visibility))
# How `to_json` writes a time: "Z" for UTC, else the offset it was given; a fraction only when
# there are microseconds.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")


def _time(v: str) -> bool:
    if _TIME.fullmatch(v) is None:
        return False
    try:
        datetime.fromisoformat(v)  # the ranges: month 13, February 30, hour 24 ...
    except ValueError:
        return False
    return True


def _ntz_text(v: str) -> str:
    """A time `_time` accepted, as TIMESTAMP_NTZ text (UTC wall-clock time), as the model path stages it."""
    if v[-1] == "Z":
        return v[:-1].replace("T", " ", 1)
    return datetime.fromisoformat(v).astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


@dataclass(frozen=True)
class _Plan:
    """How to stage a canonical record with these fields in this order, of these JSON types (the
    nulls are left out: absent keys stage as SQL NULL)."""

    take: Callable[[dict[str, Any]], tuple[Any, ...]]  # the non-null values, in staging order
    names: tuple[str, ...]  # their staging columns
    times: tuple[str, ...]  # non-null timestamp columns
    source: bool


_Signature = tuple[tuple[str, ...], tuple[type, ...]]
_PLANS: dict[_Signature, _Plan] = {}


def _plan(keys: tuple[str, ...], types: tuple[type, ...]) -> _Plan | None:
    """The plan for records with these fields in this order, of these JSON types; None unless
    they are all of MemoryRecord's fields, each of a type `to_json` writes for it. Valid
    signatures are few (the field order, which optional fields are null): they are remembered."""
    plan = _PLANS.get((keys, types))
    if plan is not None:
        return plan
    if len(keys) != len(FIELD_TYPES) or not all(t in FIELD_TYPES.get(k, ()) for k, t in zip(keys, types, strict=True)):
        return None
    present = [k for k, t in zip(keys, types, strict=True) if t is not _NONE]
    take = [k for k in present if k not in ("memory_id", "source")] + ["memory_id"]
    names = tuple("id" if k == "memory_id" else k for k in take)
    times = tuple(k for k in take if k in _TIMES)
    plan = _Plan(itemgetter(*take), names, times, "source" in present)
    if len(_PLANS) < 4096:
        _PLANS[(keys, types)] = plan
    return plan


def canonical_row(value: bytes) -> tuple[dict[str, Any], str, bool] | None:
    """Staging row, tenant id and grouped for a record exactly as `MemoryRecord.to_json` writes
    one; None for anything else (the caller then asks the model)."""
    try:
        d = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(d) is not dict:
        return None
    plan = _plan(tuple(d), tuple(map(type, d.values())))
    if plan is None:
        return None
    version = d["version"]
    if len(version) != 32 or not (version.isascii() and version.isdigit()):
        return None
    type_ = d["type"]
    if (type_ is not None and type_ not in _TYPES) or d["visibility"] not in _VISIBILITY:
        return None
    citations, redactions, source = d["citations"], d["redactions"], d["source"]
    request_id = d["request_id"]
    if request_id is not None and _REQUEST_ID.fullmatch(request_id) is None:
        return None
    if citations and not all(type(c) is str for c in citations):
        return None
    if redactions and not all(type(n) is int for n in redactions.values()):
        return None
    if source is not None and not (
        type(source.get("topic")) is str and type(source.get("partition")) is int and type(source.get("offset")) is int
    ):
        return None
    occurred, created, updated, deleted = d["occurred_at"], d["created_at"], d["updated_at"], d["deleted_at"]
    if not _time(occurred):
        return None
    if created != occurred and not _time(created):
        return None
    if updated != occurred and updated != created and not _time(updated):
        return None
    if deleted is not None and deleted != updated and not _time(deleted):
        return None

    row = dict(zip(plan.names, plan.take(d), strict=True))
    for name in plan.times:
        row[name] = _ntz_text(row[name])
    if plan.source:
        row["source_partition"] = source["partition"]
        row["source_offset"] = source["offset"]
    grouped = type_ in SUPERSEDING_TYPES and d["key"] is not None and deleted is None
    return row, d["tenant_id"], grouped
