"""schemathesis against the gateway's own OpenAPI document, with every check, in-process (ASGI).

Positive and negative cases for every operation run against the real session services
(schemathesis starts the app's lifespan itself). The bar: no server error, no schema violation,
no check failing. Examples per operation are capped to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS
from schemathesis.generation import GenerationMode

from app.auth.apikeys import ApiKeyStore
from app.auth.principal import Role
from app.gateway import create_app
from app.redis_client import create_redis
from app.settings import Settings
from tests.support.stack import Proc

MAX_EXAMPLES = 15
# The event's cross-field rules (an upsert needs type and content, a task needs content.status, a
# handoff content.to_agent and content.task, a summary citations) are not in the JSON Schema, so a
# schema-valid event body may rightly get 422 there (so may a summary citing unknown memories, or
# an event stamped too far ahead), nor is the handoff list's opaque cursor (only a `next_cursor`
# it returned is valid): positive_data_acceptance is off for these.
RULE_BOUND = {("POST", "/api/v2/memory/store"), ("POST", "/api/v2/memory/batch"), ("GET", "/api/v2/handoffs")}
# An accepted subscription is an endless event stream, which a fuzzer's in-process call would wait
# on forever; its refusals are tested in tests/integration/gateway/test_subscribe_feed.py.
STREAMS = {("GET", "/api/v2/subscribe")}


@pytest.fixture(scope="module")
def api_settings(warehouse_table: Settings, worker: Proc) -> Settings:
    del worker
    # The production configuration: real credentials only, limits high enough for the fuzzer.
    return warehouse_table.model_copy(
        update={
            "wait_visible_timeout_s": 5.0,
            "dev_tenant_header_enabled": False,
            "rate_limit_per_key_per_minute": 100_000,
            "rate_limit_per_tenant_per_minute": 100_000,
        }
    )


def admin_key(settings: Settings) -> str:
    async def create() -> str:
        redis = create_redis(settings)
        try:
            key, _ = await ApiKeyStore(redis).create(f"fuzz-{uuid.uuid4().hex[:8]}", frozenset({Role.ADMIN}))
            return key
        finally:
            await redis.aclose()

    return asyncio.run(create())


def test_openapi_conformance_all_checks(api_settings: Settings) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(api_settings, produce_timeout_s=2.0))
    # One tenant's admin key; schemathesis also replays requests without it (ignored_auth: 401).
    headers = {"X-API-Key": admin_key(api_settings)}
    all_checks = CHECKS.get_all()
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in STREAMS:
            continue
        checks = all_checks
        if (operation.method.upper(), operation.path) in RULE_BOUND:
            checks = [c for c in all_checks if c.__name__ != "positive_data_acceptance"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            ran += 1
            try:
                fuzz(operation.as_strategy(generation_mode=mode), headers, checks)
            except Unsatisfiable:
                continue  # no parameters to make invalid (/health, /ready, /metrics)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect all, then report
                failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: {describe(exc)}"[:4000])
    assert ran >= 20
    assert not failures, "\n\n".join(failures)


def fuzz(strategy: Any, headers: dict[str, str], checks: list[Any]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same examples on every run: CI must not flake
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    run()


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return f"{exc}\n" + "\n".join(f"  - {type(e).__name__}: {describe(e)}" for e in exc.exceptions)
    return str(exc)
