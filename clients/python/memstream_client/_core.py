"""The request logic both clients share: what to send for each call, how to read the answer and
whether to retry. All pure; `MemstreamClient` and `AsyncMemstreamClient` only send."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from memstream_client import models
from memstream_client.errors import ApiError, MemstreamError, ProtocolError, TransportError, error_for_status

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

API = "/api/v2"
RETRY_STATUSES = frozenset({429, 503})
DEFAULT_TIMEOUT_S = 30.0  # above the gateway's bounded `wait=visible`


@dataclass(frozen=True)
class Call(Generic[R]):
    """One API call: the request and how to turn a success into its typed result."""

    method: str
    path: str
    parse: Callable[[Any], R]
    params: Mapping[str, str] | None = None
    body: Any = None
    # Safe to send again after a lost answer (a connection error or a timeout).
    idempotent: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter: on 429 and 503 for every call
    (the gateway did not apply them), on connection errors and timeouts for idempotent calls
    only. A Retry-After header sets the wait; one above `max_retry_after_s` is not waited for."""

    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half of the exponential step, plus up to the other half at random."""
        step = min(self.backoff_max_s, self.backoff_base_s * float(1 << min(attempt, 30)))
        return step / 2 + self.rng.uniform(0, step / 2)

    def after_status(self, attempt: int, status: int, retry_after: float | None) -> float | None:
        if status not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        if retry_after is None:
            return self.backoff(attempt)
        if retry_after > self.max_retry_after_s:
            return None
        return retry_after + self.rng.uniform(0, self.backoff_base_s)

    def after_transport_error(self, attempt: int, idempotent: bool) -> float | None:
        if not idempotent or attempt >= self.max_retries:
            return None
        return self.backoff(attempt)


@dataclass(frozen=True)
class Retry:
    """The outcome of an attempt that is to be repeated after `delay` seconds."""

    attempt: int
    delay: float
    reason: str
    method: str
    path: str


@dataclass(frozen=True)
class Done(Generic[R]):
    value: R


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def api_error(status: int, headers: Mapping[str, str], content: bytes) -> ApiError:
    """The exception for an error answer, carrying the contract's code, message and details."""
    code, message, details = f"http_{status}", content[:200].decode("utf-8", "replace"), None
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        details = err.get("details")
    exc = error_for_status(status)(message, code, details, status)
    exc.retry_after = parse_retry_after(headers.get("retry-after"))
    return exc


def outcome(
    call: Call[R], attempt: int, policy: RetryPolicy, response: httpx.Response | None, error: Exception | None = None
) -> Done[R] | Retry:
    """What an attempt came to: the result, a retry, or (raised) the error."""
    if response is None:
        delay = policy.after_transport_error(attempt, call.idempotent)
        reason = type(error).__name__
        if delay is None:
            raise TransportError(f"{call.method} {call.path}: {reason}: {error}", "transport_error") from error
        return Retry(attempt, delay, reason, call.method, call.path)
    status = response.status_code
    if 200 <= status < 300:
        try:
            return Done(call.parse(response.json()))
        except (ValueError, ValidationError) as exc:
            raise ProtocolError(f"unexpected answer to {call.method} {call.path}: {exc}", "protocol_error") from exc
    failure = api_error(status, response.headers, response.content)
    delay = policy.after_status(attempt, status, failure.retry_after)
    if delay is None:
        raise failure
    return Retry(attempt, delay, f"{status} {failure.code}", call.method, call.path)


def build_request(
    http: httpx.Client | httpx.AsyncClient,
    call: Call[Any],
    headers: Mapping[str, str],
    signing_secret: bytes | None = None,
    now: float | None = None,
) -> httpx.Request:
    """The request of one attempt; writes are signed when a signing secret is given (afresh on
    every attempt: the gateway accepts each signature once)."""
    request = http.build_request(call.method, call.path, params=call.params, json=call.body, headers=headers)
    if signing_secret is not None and call.method != "GET":
        request.headers.update(signature_headers(signing_secret, request, now))
    return request


def signature_headers(secret: bytes, request: httpx.Request, now: float | None = None) -> dict[str, str]:
    """X-Memstream-Timestamp and X-Memstream-Signature (docs/security.md, signed requests):
    HMAC-SHA256 over method, path with query as sent, timestamp and the body's SHA-256."""
    timestamp = str(int(time.time() if now is None else now))
    target = request.url.raw_path.decode("latin-1")
    body_hash = hashlib.sha256(request.content).hexdigest()
    canonical = "\n".join((request.method.upper(), target, timestamp, body_hash)).encode()
    digest = hmac.new(secret, canonical, hashlib.sha256).hexdigest()
    return {"X-Memstream-Timestamp": timestamp, "X-Memstream-Signature": f"v1={digest}"}


def auth_headers(api_key: str | None, bearer_token: str | None) -> dict[str, str]:
    if api_key and bearer_token:
        raise MemstreamError("give an API key or a bearer token, not both", "client_error")
    if api_key:
        return {"X-API-Key": api_key}
    if bearer_token:
        return {"Authorization": f"Bearer {bearer_token}"}
    return {}


# The calls ---------------------------------------------------------------------------------


def _params(**values: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in values.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _model(cls: type[M]) -> Callable[[Any], M]:
    return cls.model_validate


def _request(cls: type[M], given: M | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> M:
    data: dict[str, Any] = {}
    if isinstance(given, BaseModel):
        data = given.model_dump(exclude_unset=True)
    elif given is not None:
        data = dict(given)
    data.update(fields)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise MemstreamError(f"invalid {cls.__name__}: {exc}", "client_validation_error", exc.errors()) from exc


def event_body(event: models.StoreRequest | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A store body with an event id (the idempotency key that makes a retry the same write).
    `text=` is short for `content={"text": ...}`."""
    fields = dict(fields)
    if "text" in fields:
        text = fields.pop("text")
        given = fields.get("content") or (event.get("content") if isinstance(event, Mapping) else None)
        fields["content"] = {**(given or {}), "text": text}
    req = _request(models.StoreRequest, event, fields)
    body = req.model_dump(mode="json", exclude_none=True)
    body.setdefault("event_id", f"sdk-{uuid.uuid4()}")
    return body


def wait_param(wait: bool) -> dict[str, str] | None:
    return {"wait": "visible"} if wait else None


def store(
    event: models.StoreRequest | Mapping[str, Any] | None, wait: bool, fields: Mapping[str, Any]
) -> Call[models.StoreResult]:
    body = event_body(event, fields)
    return Call("POST", f"{API}/memory/store", _model(models.StoreResult), wait_param(wait), body)


def batch(items: list[models.StoreRequest | Mapping[str, Any]], wait: bool) -> Call[models.BatchResult]:
    body = {"items": [event_body(item, {}) for item in items]}
    return Call("POST", f"{API}/memory/batch", _model(models.BatchResult), wait_param(wait), body)


def retrieve(memory_id: str, memory_type: str | None, channel_visibility: str | None) -> Call[models.RetrieveResult]:
    params = _params(memory_id=memory_id, memory_type=memory_type, channel_visibility=channel_visibility)
    return Call("GET", f"{API}/memory/retrieve", _model(models.RetrieveResult), params)


def search(q: str, **options: Any) -> Call[models.SearchResult]:
    return Call("GET", f"{API}/memory/search", _model(models.SearchResult), _params(q=q, **options))


def stats() -> Call[models.StatsResult]:
    return Call("GET", f"{API}/memory/stats", _model(models.StatsResult))


def forget(memory_id: str, wait: bool) -> Call[models.StoreResult]:
    # A repeated delete of the same memory changes nothing: safe to resend.
    path = f"{API}/memory/{_segment(memory_id)}"
    return Call("DELETE", path, _model(models.StoreResult), wait_param(wait))


def context(**options: Any) -> Call[models.ContextResult]:
    return Call("GET", f"{API}/context", _model(models.ContextResult), _params(**options))


def create_handoff(
    handoff: models.HandoffRequest | Mapping[str, Any] | None, wait: bool, fields: Mapping[str, Any]
) -> Call[models.StoreResult]:
    body = _request(models.HandoffRequest, handoff, fields).model_dump(mode="json", exclude_none=True)
    body.setdefault("event_id", f"sdk-handoff-{uuid.uuid4()}")
    return Call("POST", f"{API}/handoffs", _model(models.StoreResult), wait_param(wait), body)


def list_handoffs(to_agent: str, **options: Any) -> Call[models.HandoffList]:
    return Call("GET", f"{API}/handoffs", _model(models.HandoffList), _params(to_agent=to_agent, **options))


def ack_handoff(handoff_id: str, agent_id: str | None, note: str | None) -> Call[models.HandoffAckResult]:
    body = models.HandoffAckRequest(agent_id=agent_id, note=note).model_dump(exclude_none=True)
    # A lost answer to an ack that was applied makes its resend a 409: not resent on errors.
    path = f"{API}/handoffs/{_segment(handoff_id)}/ack"
    return Call("POST", path, _model(models.HandoffAckResult), None, body, idempotent=False)


def health() -> Call[models.HealthResult]:
    return Call("GET", "/health", _model(models.HealthResult))


def ready() -> Call[models.ReadyResult]:
    return Call("GET", "/ready", _model(models.ReadyResult))


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
