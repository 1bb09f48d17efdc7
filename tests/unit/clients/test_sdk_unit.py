"""The SDK's pure parts: its models held to the gateway's OpenAPI document and to the event's
JSON Schema, the retry decisions, error parsing, request building; and its independence from the
server's packages."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from memstream_client import MemstreamError, _core, models
from memstream_client.errors import ApiError, Conflict, EventInvalid, GatewayTimeout, RateLimited
from memstream_client.event import MemoryEvent as ClientEvent
from memstream_client.producer import build_event
from pydantic import BaseModel

from app.gateway import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

# gateway component name -> the SDK model that mirrors it
MIRRORS: dict[str, type[BaseModel]] = {
    "StoreResult": models.StoreResult,
    "ErasureResult": models.ErasureResult,
    "BatchResult": models.BatchResult,
    "BatchItemOk": models.BatchItemOk,
    "BatchItemError": models.BatchItemError,
    "RetrieveResult": models.RetrieveResult,
    "SearchResult": models.SearchResult,
    "SearchHit": models.SearchHit,
    "ContextResult": models.ContextResult,
    "ContextItemOut": models.ContextItemOut,
    "HandoffList": models.HandoffList,
    "HandoffOut": models.HandoffOut,
    "HandoffAckResult": models.HandoffAckResult,
    "ReadyResult": models.ReadyResult,
    "DependencyState": models.DependencyState,
    "HealthResult": models.HealthResult,
    "StatsResult": models.StatsResult,
    "MemoryRecord": models.MemoryRecord,
    "SourcePosition": models.SourcePosition,
    "StoreRequest": models.StoreRequest,
    "HandoffRequest": models.HandoffRequest,
    "HandoffAckRequest": models.HandoffAckRequest,
    "Channel": models.Channel,
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    settings = Settings(_env_file=None, env="development")
    doc: dict[str, Any] = create_app(settings).openapi()
    return doc


def _component(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    schemas: dict[str, Any] = openapi["components"]["schemas"]
    for candidate in (name, f"{name}-Output", f"{name}-Input"):
        if candidate in schemas:
            return dict(schemas[candidate])
    raise AssertionError(f"the gateway's OpenAPI has no component {name}")


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_sdk_models_mirror_the_gateway_openapi(openapi: dict[str, Any], name: str) -> None:
    gateway = _component(openapi, name)
    model = MIRRORS[name]
    fields = set(model.model_fields)
    assert set(gateway["properties"]) == fields, f"{name}: fields differ from the gateway's"
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    # The SDK may be more lenient than the gateway (it tolerates omissions), never stricter.
    assert required <= set(gateway.get("required", [])), f"{name}: the SDK requires more than the gateway sends"


def test_every_gateway_response_model_is_mirrored(openapi: dict[str, Any]) -> None:
    used = set()
    for path in openapi["paths"].values():
        for op in path.values():
            for status, resp in op.get("responses", {}).items():
                ref = resp.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                if status.startswith("2") and ref:
                    used.add(ref.rsplit("/", 1)[-1].removesuffix("-Output"))
    assert used <= set(MIRRORS), f"responses without an SDK model: {sorted(used - set(MIRRORS))}"


def test_client_event_model_matches_the_published_schema() -> None:
    published = json.loads((ROOT / "schemas" / "memory-event.schema.json").read_text())
    assert ClientEvent.model_json_schema() == published


def test_client_pyproject_depends_only_on_httpx_and_pydantic() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == ["httpx", "pydantic"]
    assert [d.split(">")[0] for d in project["optional-dependencies"]["producer"]] == ["confluent-kafka"]


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    policy = _core.RetryPolicy(max_retries=5, backoff_base_s=1.0, backoff_max_s=8.0, rng=random.Random(1))
    for attempt, step in enumerate([1, 2, 4, 8, 8, 8]):
        delays = {policy.backoff(attempt) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays) and len(delays) > 1


def test_retry_decisions() -> None:
    p = _core.RetryPolicy(max_retries=2, backoff_base_s=0.1, max_retry_after_s=10)
    assert p.after_status(0, 429, None) is not None
    assert p.after_status(0, 503, 3.0) is not None and p.after_status(0, 503, 3.0) >= 3.0  # type: ignore[operator]
    assert p.after_status(0, 503, 11.0) is None  # longer than we wait inside a call
    assert p.after_status(2, 429, None) is None  # retries spent
    for status in (400, 401, 403, 404, 409, 422, 500, 504):
        assert p.after_status(0, status, None) is None
    assert p.after_transport_error(0, idempotent=True) is not None
    assert p.after_transport_error(0, idempotent=False) is None
    assert p.after_transport_error(2, idempotent=True) is None


def test_retry_after_forms() -> None:
    assert _core.parse_retry_after("7") == 7.0
    assert _core.parse_retry_after(None) is None and _core.parse_retry_after("soon") is None
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    http_date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert _core.parse_retry_after(http_date, now=now.timestamp()) == pytest.approx(30)


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {})


def test_errors_carry_code_message_and_details() -> None:
    call = _core.health()
    policy = _core.RetryPolicy(max_retries=0)
    body = {"error": {"code": "already_acked", "message": "handoff already acknowledged", "details": {"a": 1}}}
    with pytest.raises(Conflict) as out:
        _core.outcome(call, 0, policy, _response(409, body))
    assert (out.value.code, out.value.message, out.value.details, out.value.status) == (
        "already_acked",
        "handoff already acknowledged",
        {"a": 1},
        409,
    )
    with pytest.raises(RateLimited) as limited:
        _core.outcome(call, 0, policy, _response(429, {"error": {"code": "rate_limited", "message": "m"}},
                                                 {"Retry-After": "4"}))  # fmt: skip
    assert limited.value.retry_after == 4
    with pytest.raises(GatewayTimeout):
        _core.outcome(call, 0, policy, _response(504, b"upstream timed out"))
    with pytest.raises(ApiError) as teapot:
        _core.outcome(call, 0, policy, _response(418, b"<html>"))
    assert teapot.value.code == "http_418" and isinstance(teapot.value, MemstreamError)
    with pytest.raises(MemstreamError) as proto:
        _core.outcome(call, 0, policy, _response(200, {"unexpected": True}))
    assert proto.value.code == "protocol_error"


def test_store_body_gets_an_event_id_and_the_text_shortcut() -> None:
    call = _core.store(None, True, {"type": "event", "text": "hi", "session_id": "s"})
    assert call.params == {"wait": "visible"} and call.idempotent
    assert call.body["content"] == {"text": "hi"} and call.body["event_id"].startswith("sdk-")
    again = _core.store(
        models.StoreRequest(type="task", content={"text": "t", "status": "open"}, event_id="e1"), False, {}
    )
    assert again.body == {"schema_version": 1, "op": "upsert", "event_id": "e1", "type": "task",
                          "content": {"text": "t", "status": "open"}}  # fmt: skip
    with pytest.raises(MemstreamError) as bad:
        _core.store(None, False, {"typo_field": 1})
    assert bad.value.code == "client_validation_error"
    assert _core.search("q", limit=5, include_superseded=False).params == {
        "q": "q",
        "limit": "5",
        "include_superseded": "false",
    }
    assert _core.forget("a/b", False).path == "/api/v2/memory/a%2Fb"
    assert not _core.ack_handoff("h", None, None).idempotent


def test_producer_validates_events_before_sending() -> None:
    ev = build_event({"tenant_id": "acme", "type": "event", "content": {"text": "hello"}})
    assert ev.schema_version == 1 and ev.event_id.startswith("sdk-")
    assert json.loads(ev.to_json())["content"] == {"text": "hello"}
    for bad in (
        {"tenant_id": "acme", "type": "task", "content": {"text": "no status"}},
        {"tenant_id": "acme", "type": "memo", "content": {"text": "x"}},
        {"tenant_id": "bad tenant!", "type": "event", "content": {"text": "x"}},
        {"tenant_id": "acme", "type": "event", "content": {"text": "x"}, "mood": "happy"},
        {"tenant_id": "acme", "type": "summary", "content": {"text": "x"}},
        {"tenant_id": "acme", "op": "delete"},
        {"tenant_id": "acme", "type": "event", "content": {"text": "x"}, "metadata": {"n": [2**64]}},
    ):
        with pytest.raises(EventInvalid) as out:
            build_event(bad)
        assert out.value.code == "event_invalid" and out.value.details


def test_signatures_are_the_gateways() -> None:
    from app.auth.signing import sign_request

    body = b'{"type":"event","content":{"text":"x"}}'
    req = httpx.Request("POST", "http://gw/api/v2/memory/store?wait=visible", content=body)
    headers = _core.signature_headers(b"secret", req, now=1767225600)
    assert headers["X-Memstream-Timestamp"] == "1767225600"
    expected = sign_request(b"secret", "POST", "/api/v2/memory/store?wait=visible", "1767225600", body)
    assert headers["X-Memstream-Signature"] == expected
    with httpx.Client(base_url="http://gw") as http:
        assert "X-Memstream-Signature" not in _core.build_request(http, _core.stats(), {}, b"secret").headers
        assert "X-Memstream-Signature" in _core.build_request(http, _core.forget("m", False), {}, b"secret").headers
