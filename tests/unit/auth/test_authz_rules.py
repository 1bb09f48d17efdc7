"""Pure rules of issue 13 part 3: the agent-scope read/write rule, the shared nesting limit,
literal ILIKE patterns, tenant-only lag figures, API key rows, and secret rotation."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from app.auth.apikeys import ALG_HMAC, new_api_key, verify_api_key
from app.auth.errors import Unauthenticated
from app.auth.jwt_auth import JwtConfig, verify_jwt
from app.auth.principal import Role
from app.auth.registry import COLUMNS, from_row, to_row
from app.auth.scope import may_read, may_write
from app.auth.secrets import RotatingSecret, SecretPair
from app.gateway.context import assemble
from app.gateway.docs import Doc
from app.gateway.search import SearchParams, passes
from app.gateway.stats import lag_status
from app.gateway.warehouse import like_contains, search_sql
from app.models import MAX_JSON_DEPTH, MemoryEvent, json_depth_exceeds
from tests.support.auth import claims

OLD, NEW = "o" * 40, "n" * 40


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_read_rule() -> None:
    assert may_read(None, "coder", "event", None)  # unscoped credential: tenant-wide
    assert may_read("planner", "planner", "event", None)
    assert may_read("planner", None, "rule", None)  # unscoped memories are tenant knowledge
    assert not may_read("planner", "coder", "event", None)
    assert may_read("planner", "coder", "handoff", "planner")  # its inbox
    assert not may_read("planner", "coder", "handoff", "reviewer")
    assert not may_read("planner", "coder", "event", "planner")  # to_agent means nothing outside handoffs


def test_write_rule() -> None:
    assert may_write(None, "coder", exists=True)
    assert may_write("planner", None, exists=False)  # a new memory id
    assert may_write("planner", "planner", exists=True)
    assert not may_write("planner", "coder", exists=True)
    assert not may_write("planner", None, exists=True)  # an unscoped memory is not its own
    assert not may_write("reviewer", "coder", exists=True)  # a handoff's recipient acknowledges, never rewrites


def doc(mid: str, agent: str | None, type_: str = "event", to_agent: str | None = None, session: str = "s") -> Doc:
    content: dict[str, Any] = {"text": f"zebra words of {mid}"}
    if to_agent:
        content.update(to_agent=to_agent, task="t", status="open")
    return Doc(
        mid,
        {
            "memory_id": mid,
            "type": type_,
            "content": content,
            "agent_id": agent,
            "session_id": session,
            "visibility": "private",
            "occurred_at": datetime.now(UTC).isoformat(),
        },
    )


def test_search_and_context_apply_the_same_rule() -> None:
    docs = [doc("a", "planner"), doc("b", "coder"), doc("c", None), doc("h", "coder", "handoff", "planner")]
    expected = {d.memory_id for d in docs if may_read("planner", d.agent_id, d.type, d.to_agent)}
    assert expected == {"a", "c", "h"}
    p = SearchParams(terms=("zebra",), reader_agent="planner")
    assert {d.memory_id for d in docs if passes(d, p)} == expected
    assert {d.memory_id for d in docs if passes(d, SearchParams(terms=("zebra",)))} == {"a", "b", "c", "h"}
    ctx = assemble({"recent": docs}, 10_000, session_id="s", reader_agent="planner")
    assert {i.memory_id for i in ctx.items} == {"a", "c", "h"}
    assert {i.memory_id for i in assemble({"recent": docs}, 10_000, session_id="s").items} == {"a", "b", "c", "h"}


def test_warehouse_sql_filters_by_the_rule() -> None:
    sql, params = search_sql("T", ("zebra",), SearchParams(terms=("zebra",), reader_agent="planner"), 10)
    assert "(agent_id IS NULL OR agent_id = ? OR (type = ? AND content:to_agent::string = ?))" in sql
    assert params[2:5] == ["planner", "handoff", "planner"]
    assert "agent_id IS NULL" not in search_sql("T", ("zebra",), SearchParams(terms=("zebra",)), 10)[0]


def test_like_patterns_are_literal() -> None:
    assert like_contains("foo_bar") == "%foo!_bar%"
    assert like_contains("100%") == "%100!%%"
    assert like_contains("a!b\\c") == "%a!!b\\c%"
    sql, _ = search_sql("T", ("x",), SearchParams(terms=("x",)), 5)
    assert sql.count("ESCAPE '!'") == 2


def test_one_nesting_limit_for_gateway_and_worker() -> None:
    assert not json_depth_exceeds(nested(MAX_JSON_DEPTH))
    assert json_depth_exceeds(nested(MAX_JSON_DEPTH + 1))
    assert json_depth_exceeds([[[[1]]]], limit=3) and not json_depth_exceeds([[[1]]], limit=3)
    base = {
        "schema_version": 1,
        "event_id": "e",
        "tenant_id": "t",
        "type": "event",
        "content": {"text": "x"},
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    MemoryEvent.model_validate({**base, "metadata": nested(MAX_JSON_DEPTH)})
    for deep in ({"metadata": nested(200)}, {"content": {"text": "x", "extra": nested(MAX_JSON_DEPTH + 1)}}):
        with pytest.raises(ValidationError, match="nests deeper than"):
            MemoryEvent.model_validate({**base, **deep})
    # The worker validates the JSON bytes with the same model.
    with pytest.raises(ValidationError, match="nests deeper than"):
        MemoryEvent.model_validate_json(json.dumps({**base, "metadata": nested(MAX_JSON_DEPTH + 8)}))


def test_stats_show_lag_without_figures() -> None:
    assert lag_status({"group": "g", "topic": "t", "total": 0, "partitions": {"0": 0}}) == {"status": "caught_up"}
    assert lag_status({"total": 12, "partitions": {"0": 12}}) == {"status": "behind"}
    assert lag_status({"total": None, "error": "down"}) == {"status": "unknown"}


def test_api_key_rows_round_trip() -> None:
    _, record = new_api_key("acme", frozenset({Role.WRITER, Role.READER}), b"p", 1000.0, "planner", "ci", 60)
    row = dict(zip(COLUMNS, to_row(record), strict=True))
    assert from_row(row) == record
    assert from_row({**row, "revoked": None}).revoked  # anything but an explicit false is revoked


def test_api_key_pepper_rotation() -> None:
    now = time.time()
    old_key, old_rec = new_api_key("acme", frozenset({Role.READER}), OLD.encode(), now)
    new_key, new_rec = new_api_key("acme", frozenset({Role.READER}), NEW.encode(), now)
    assert old_rec.hash_alg == ALG_HMAC
    # During the rotation both verify; the previous pepper never verifies a key alone.
    assert verify_api_key(old_key, old_rec, NEW.encode(), now, previous=OLD.encode()).tenant_id == "acme"
    assert verify_api_key(new_key, new_rec, NEW.encode(), now, previous=OLD.encode()).tenant_id == "acme"
    with pytest.raises(Unauthenticated):
        verify_api_key(old_key, old_rec, NEW.encode(), now)  # the previous pepper removed
    with pytest.raises(Unauthenticated):
        verify_api_key(new_key, old_rec, NEW.encode(), now, previous=OLD.encode())  # another key's record


def test_hs256_rotation() -> None:
    old_token = jwt.encode(claims("acme", iss=None, aud=None), OLD, algorithm="HS256")
    new_token = jwt.encode(claims("acme", iss=None, aud=None), NEW, algorithm="HS256")
    both = JwtConfig(algorithms=("HS256",), hs_secret=NEW.encode(), hs_previous=OLD.encode())
    assert verify_jwt(old_token, both).tenant_id == verify_jwt(new_token, both).tenant_id == "acme"
    only_new = JwtConfig(algorithms=("HS256",), hs_secret=NEW.encode())
    assert verify_jwt(new_token, only_new).tenant_id == "acme"
    with pytest.raises(Unauthenticated) as info:
        verify_jwt(old_token, only_new)
    assert info.value.reason == "signature"
    expired = jwt.encode(claims("acme", iss=None, aud=None, exp=int(time.time()) - 600), OLD, algorithm="HS256")
    with pytest.raises(Unauthenticated) as info:
        verify_jwt(expired, both)
    assert info.value.reason == "expired"  # the previous secret matched; its claims are still checked


def test_file_secret_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    path.write_text("first-value\n")
    secret = RotatingSecret("api_key_pepper", SecretStr("first-value"), str(path), check_s=0.0)
    assert secret.get() == b"first-value"
    path.write_text("second-value\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a new mtime, as a rename brings
    assert secret.get() == b"second-value"
    path.unlink()  # mid-swap: the last value read stays
    assert secret.get() == b"second-value"
    slow = RotatingSecret("x", SecretStr("a"), str(tmp_path / "missing"), check_s=3600.0)
    assert slow.get() == b"a"


def test_secret_pair_values() -> None:
    assert SecretPair.fixed(b"new", b"old").values() == (b"new", b"old")
    assert SecretPair.fixed(b"same", b"same").values() == (b"same",)
    assert SecretPair.fixed(None, None).values() == ()
