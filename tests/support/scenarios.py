"""The acceptance scenarios' world: one big tenant seeded once per session, an API key for it,
and a client that speaks to the gateway as an agent does (HTTP with X-API-Key).

The tenant holds SEED_PER_TYPE memories of each of six types across many sessions, agents and
channels, published straight to `memory.events` with a confluent producer; the fixture returns
once the ingest worker has committed past them and the warehouse holds every one. Each scenario
works in its own sessions, agents and keys inside this tenant, so none passes only because the
tenant is small.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.kafka import caught_up
from app.models import derive_memory_id
from app.settings import Settings
from app.snowflake_conn import connect
from tests.support.gateway import Gateway
from tests.support.kafka import publish
from tests.support.stack import ROOT, Proc, Stack, wait_until

SEED_PER_TYPE = 5000
SEED_TYPES = ("event", "decision", "rule", "identity", "task", "summary")
SESSIONS = 200
AGENTS = 40
COMMON_WORD = "roadmap"  # in every seeded memory: a search for it has 30,000 candidates
_WORDS = (
    "billing",
    "latency",
    "onboarding",
    "invoice",
    "kubernetes",
    "pricing",
    "privacy",
    "retention",
    "analytics",
    "migration",
    "caching",
    "alerting",
    "backlog",
    "contract",
    "support",
    "security",
)
_STATUS = ("open", "in_progress", "blocked", "done")
_VIS = ("public", "internal", "private")


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ago(**delta: float) -> str:
    return iso(datetime.now(UTC) - timedelta(**delta))


def seed_events(tenant: str, now: datetime) -> list[dict[str, Any]]:
    """SEED_PER_TYPE memories of each type, spread over sessions, agents, channels and time
    (each within its type's hotset TTL), every text distinct."""
    out: list[dict[str, Any]] = []
    for t_index, mtype in enumerate(SEED_TYPES):
        for i in range(SEED_PER_TYPE):
            n = t_index * SEED_PER_TYPE + i
            word = _WORDS[n % len(_WORDS)]
            age = (
                timedelta(minutes=(n * 7) % (36 * 60))
                if mtype in ("event", "summary", "task")
                else timedelta(hours=(n * 5) % (40 * 24))
            )
            body: dict[str, Any] = {
                "schema_version": 1,
                "event_id": f"seed-{mtype}-{i}",
                "tenant_id": tenant,
                "type": mtype,
                "session_id": f"seed-s{n % SESSIONS:03d}",
                "agent_id": f"seed-a{n % AGENTS:02d}",
                "user_id": f"seed-u{n % 20:02d}",
                "channel": {"id": f"seed-c{n % 12}", "visibility": _VIS[n % 3]},
                "content": {"text": f"{mtype} {i}: {word} {COMMON_WORD} item {n} for team {n % 97}"},
                "importance": round((n % 10) / 10, 1),
                "occurred_at": iso(now - age),
            }
            if mtype in ("decision", "rule", "identity"):
                body["key"] = f"seed-{mtype}-{i % 4500}"  # some keys twice: superseded memories too
            if mtype == "task":
                body["key"] = f"seed-task-{i}"
                body["content"]["status"] = _STATUS[i % 4]
            if mtype == "summary":
                body["citations"] = [derive_memory_id(tenant, f"seed-event-{i}")]
            out.append(body)
    return out


def warehouse_count(settings: Settings, tenant: str, where: str = "", params: Iterable[Any] = ()) -> int:
    conn = connect(settings)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM MEMORY_RECORDS WHERE tenant_id = %s {where}", [tenant, *params])
        row = cur.fetchone()
        return int(row[0]) if row else 0  # type: ignore[index,call-overload]
    finally:
        conn.close()


def processed(settings: Settings, ends: dict[int, int], timeout_s: float = 120.0) -> None:
    """Wait until the ingest worker has committed past `ends` (delivery-report offsets)."""
    wait_until(lambda: caught_up(settings, settings.worker_group, settings.topic_events, ends), timeout_s, 0.2)


def cli(stack: Stack, *argv: str, timeout_s: float = 300.0, **env: str) -> subprocess.CompletedProcess[str]:
    """`memstream ARGV` as an operator runs it, against the test stack."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv],
        env={**os.environ, **stack.env, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@dataclass
class Seeded:
    tenant: str
    api_key: str
    settings: Settings
    stack: Stack
    memories: int

    def scope(self, name: str) -> str:
        """A fresh session/agent/key name for one scenario inside the tenant."""
        return f"{name}-{uuid.uuid4().hex[:8]}"

    def event(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"scn-{uuid.uuid4().hex}",
            "tenant_id": self.tenant,
            "type": "event",
            "occurred_at": ago(minutes=1),
        }
        body.update(fields)
        return body

    def produce(self, events: list[dict[str, Any]]) -> list[str]:
        """Publish to memory.events as any producer does; returns the memory ids once processed."""
        processed(self.settings, publish(self.settings, events))
        return [e.get("memory_id") or derive_memory_id(self.tenant, e["event_id"]) for e in events]


@dataclass
class Agent:
    """The gateway as an agent calls it: real HTTP requests carrying the tenant's API key."""

    client: httpx.AsyncClient
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def post(self, path: str, body: dict[str, Any], **params: Any) -> httpx.Response:
        return await self.client.post(path, json=body, params=params, headers=self.headers)

    async def ok(self, path: str, **params: Any) -> dict[str, Any]:
        r = await self.get(path, **params)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture(scope="session")
def seeded(stack: Stack, warehouse_table: Settings, worker: Proc) -> Seeded:
    tenant = f"scn-{uuid.uuid4().hex[:10]}"
    settings = stack.settings()
    events = seed_events(tenant, datetime.now(UTC))
    ends = publish(settings, events)
    processed(settings, ends, timeout_s=300)
    wait_until(lambda: warehouse_count(settings, tenant) >= len(events), timeout_s=300, interval_s=1.0)
    made = cli(stack, "keys", "create", "--tenant", tenant, "--role", "reader", "--role", "writer", "--name", "scn")
    assert made.returncode == 0, made.stderr
    return Seeded(tenant, json.loads(made.stdout)["api_key"], settings, stack, len(events))


@pytest.fixture(scope="session")
async def agent(seeded: Seeded, gateway: Gateway) -> AsyncIterator[Agent]:
    yield Agent(gateway.client, seeded.api_key)


async def eventually(predicate: Callable[[], Awaitable[Any]], timeout_s: float = 60.0) -> Any:
    """Poll an async predicate until truthy (the gateway's view settles after a write)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    while loop.time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")
