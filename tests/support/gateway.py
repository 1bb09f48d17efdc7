"""Fixtures for the gateway tests: the warehouse table, a running gateway app, warehouse rows."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.gateway import create_app
from app.gateway.deps import Services
from app.migrate import discover, needs_time_travel
from app.settings import Settings
from app.snowflake_conn import connect
from tests.support.stack import Proc, Stack

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "deploy" / "snowflake"
V001 = MIGRATIONS / "V001__memory_records.sql"
_VARIANTS = ("content", "metadata", "citations", "redactions")


def apply_v001(settings: Settings) -> None:
    """The warehouse schema (every migration, in order), idempotently (IF NOT EXISTS); Time Travel
    statements are left out, as `memstream migrate` leaves them out on the emulator."""
    statements = [st for m in discover(MIGRATIONS) for st in m.statements if not needs_time_travel(st)]
    conn = connect(settings, with_schema=False)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {settings.snowflake_database}")
        cur.execute(f"USE DATABASE {settings.snowflake_database}")
        for statement in statements:
            cur.execute(statement)
    finally:
        conn.close()


def insert_row(settings: Settings, tenant: str, memory_id: str, **cols: Any) -> dict[str, Any]:
    """Put one record straight into AI_MEMORY.MEMORY_RECORDS (as the sink would)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    row: dict[str, Any] = {
        "tenant_id": tenant,
        "id": memory_id,
        "version": 1000,
        "event_id": f"ev-{memory_id}",
        "type": "event",
        "content": {"text": f"warehouse text of {memory_id}"},
        "metadata": {},
        "citations": [],
        "redactions": {},
        "visibility": "private",
        "occurred_at": now,
        "created_at": now,
        "updated_at": now,
        # No event of the events topic: a row the hotset never held (app/gateway/coverage.py).
        "source_partition": None,
        "source_offset": None,
    }
    row.update(cols)
    names = list(row)
    exprs = ["PARSE_JSON(%s)" if n in _VARIANTS else "%s" for n in names]
    values = [orjson.dumps(row[n]).decode() if n in _VARIANTS else row[n] for n in names]
    conn = connect(settings)
    try:
        conn.cursor().execute(
            f"INSERT INTO {settings.snowflake_schema}.MEMORY_RECORDS ({', '.join(names)}) SELECT {', '.join(exprs)}",
            values,
        )
    finally:
        conn.close()
    return row


@pytest.fixture(scope="session")
def warehouse_table(stack: Stack) -> Settings:
    settings = stack.settings()
    apply_v001(settings)
    return settings


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def headers(self, tenant: str) -> dict[str, str]:
        return {self.settings.dev_tenant_header: tenant}

    async def get(self, tenant: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers={**self.headers(tenant), **(headers or {})}, **kw)

    async def post(self, tenant: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, headers={**self.headers(tenant), **(headers or {})}, **kw)

    async def delete(self, tenant: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, headers={**self.headers(tenant), **(headers or {})}, **kw)

    async def store(self, tenant: str, body: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        r = await self.post(tenant, "/api/v2/memory/store", json=body, params={"wait": "visible"} if wait else {})
        assert r.status_code == 202, r.text
        out: dict[str, Any] = r.json()
        return out


@contextlib.asynccontextmanager
async def running(settings: Settings, **kw: Any) -> AsyncIterator[Gateway]:
    """The app in-process with its lifespan (producer, Redis pool, warehouse pool) started."""
    app = create_app(settings, **kw)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, settings)


@pytest.fixture(scope="session")
async def gateway(warehouse_table: Settings, worker: Proc) -> AsyncIterator[Gateway]:
    del worker  # the ingest worker must run: writes become readable through it
    async with running(warehouse_table) as gw:
        await worker_ready(gw)
        yield gw


async def worker_ready(gw: Gateway, timeout_s: float = 90.0) -> None:
    """The session worker joins its group in the background: wait until a write comes through
    (stored, or processed as a duplicate of an earlier probe)."""
    out = await gw.store("probe", {"type": "event", "content": {"text": "probe"}}, wait=False)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        [(v, seen)] = await gw.services.reader.progress([("probe", out["memory_id"], out["event_id"])])
        if v is not None or seen:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the ingest worker did not process a probe event")


def eid() -> str:
    return f"e-{uuid.uuid4().hex[:12]}"
