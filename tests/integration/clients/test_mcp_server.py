"""`memstream mcp` through the official MCP client, over stdio (a subprocess acting as the
credential in its environment) and streamable HTTP (each request's credential forwarded), against
a real gateway, worker, Redis, Kafka and warehouse."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from memstream_client import AsyncMemstreamClient

from app import devstack
from app.auth.principal import Role
from app.mcp_server import TOOLS, call_tool, forwarded_credential
from tests.support.gateway import Gateway
from tests.support.live_gateway import LiveGateway, live_gateway
from tests.support.stack import ROOT, Proc, Stack

TOOL_NAMES = {"remember", "recall", "get_context", "get_memory", "forget", "hand_off", "list_handoffs", "ack_handoff"}


@pytest.fixture(scope="module")
def live(stack: Stack, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    del gateway  # the session worker is ready once this fixture is
    with live_gateway(stack, tmp_path_factory.mktemp("mcp-gw")) as gw:
        yield gw


@pytest.fixture(scope="module")
def mcp_http(live: LiveGateway, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = devstack.free_port()
    env = {**stack.env, "MEMSTREAM_GATEWAY_URL": live.url}
    argv = ["mcp", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(argv, env, tmp_path_factory.mktemp("mcp-http") / "mcp.log").start()
    try:
        assert proc.proc is not None
        devstack.wait_for_port(port, 60, proc.proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop()


@contextlib.asynccontextmanager
async def stdio_session(live: LiveGateway, **credential: str) -> AsyncIterator[ClientSession]:
    env = {"MEMSTREAM_GATEWAY_URL": live.url, **credential}
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"], env=env, cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def http_session(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def ok(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


def refused(result: types.CallToolResult) -> str:
    assert result.is_error, result.structured_content
    code: str = result.structured_content["error"]["code"]
    assert code in result.content[0].text  # type: ignore[union-attr]
    return code


async def exercise(s: ClientSession) -> str:
    """Every tool once, as a writer; returns the id of a memory that stays."""
    listed = (await s.list_tools()).tools
    assert {t.name for t in listed} == TOOL_NAMES
    schemas = {t.name: t.input_schema for t in listed}
    assert schemas == {t.name: t.model.model_json_schema() for t in TOOLS}
    assert all(t.description and len(t.description) > 40 for t in listed)
    session = f"s-{uuid.uuid4().hex[:8]}"
    word = f"kw{uuid.uuid4().hex[:8]}"

    kept = ok(await s.call_tool("remember", {"type": "decision", "key": "db", "session_id": session,
              "content": {"text": f"Use Snowflake {word}"}, "wait": True}))  # fmt: skip
    assert kept["status"] == "visible"
    mid = kept["memory_id"]
    assert (
        ok(await s.call_tool("get_memory", {"memory_id": mid}))["record"]["content"]["text"] == f"Use Snowflake {word}"
    )
    hits = ok(await s.call_tool("recall", {"q": word}))
    assert [h["memory_id"] for h in hits["results"]] == [mid]
    ctx = ok(await s.call_tool("get_context", {"session_id": session, "budget_tokens": 400}))
    assert mid in {i["memory_id"] for i in ctx["items"]}

    sent = ok(await s.call_tool("hand_off", {"to_agent": f"a-{word}", "task": "deploy", "wait": True}))
    inbox = ok(await s.call_tool("list_handoffs", {"to_agent": f"a-{word}"}))
    assert [h["handoff_id"] for h in inbox["handoffs"]] == [sent["memory_id"]]
    assert ok(await s.call_tool("ack_handoff", {"handoff_id": sent["memory_id"], "agent_id": f"a-{word}"}))["acked"]
    assert refused(await s.call_tool("ack_handoff", {"handoff_id": sent["memory_id"]})) == "already_acked"

    temp = ok(await s.call_tool("remember", {"type": "event", "content": {"text": "to forget"}, "wait": True}))
    ok(await s.call_tool("forget", {"memory_id": temp["memory_id"], "wait": True}))
    assert refused(await s.call_tool("get_memory", {"memory_id": temp["memory_id"]})) == "deleted"

    assert refused(await s.call_tool("remember", {"type": "memo", "content": {"text": "x"}})) == "validation_error"
    assert refused(await s.call_tool("recall", {"q": "x", "limit": 1000})) == "validation_error"
    return str(mid)


async def test_every_tool_over_stdio(live: LiveGateway, tenant: str) -> None:
    writer = await live.key(tenant, Role.WRITER)
    stranger = await live.key(f"{tenant}-x", Role.WRITER)
    async with stdio_session(live, MEMSTREAM_API_KEY=writer) as s:
        mid = await exercise(s)
    async with stdio_session(live, MEMSTREAM_BEARER_TOKEN=live.token(tenant, "reader")) as s:
        assert refused(await s.call_tool("remember", {"type": "event", "content": {"text": "x"}})) == "forbidden"
        assert ok(await s.call_tool("get_memory", {"memory_id": mid}))["record"]["memory_id"] == mid
    async with stdio_session(live, MEMSTREAM_API_KEY=stranger) as s:
        assert refused(await s.call_tool("get_memory", {"memory_id": mid})) == "not_found"


async def test_every_tool_over_http_with_the_callers_credential(live: LiveGateway, mcp_http: str, tenant: str) -> None:
    writer = await live.key(tenant, Role.WRITER)
    reader = await live.key(tenant, Role.READER)
    async with http_session(mcp_http, {"X-API-Key": writer}) as s:
        mid = await exercise(s)
    async with http_session(mcp_http, {"X-API-Key": reader}) as s:
        assert refused(await s.call_tool("remember", {"type": "event", "content": {"text": "x"}})) == "forbidden"
        assert ok(await s.call_tool("recall", {"q": "snowflake"}))["results"]
    token = live.token(f"{tenant}-x", "writer")
    async with http_session(mcp_http, {"Authorization": f"Bearer {token}"}) as s:
        assert refused(await s.call_tool("get_memory", {"memory_id": mid})) == "not_found"
    async with http_session(mcp_http, {}) as s:
        assert refused(await s.call_tool("get_memory", {"memory_id": mid})) == "unauthorized"


async def test_tool_calls_in_process(gateway: Gateway, tenant: str) -> None:
    transport = httpx.ASGITransport(app=gateway.app)
    async with AsyncMemstreamClient("http://gateway", headers=gateway.headers(tenant), transport=transport) as c:
        out = await call_tool(c, "remember", {"type": "event", "content": {"text": "in process"}, "wait": True})
        assert not out.is_error and out.structured_content["status"] == "visible"
        got = await call_tool(c, "get_memory", {"memory_id": out.structured_content["memory_id"]})
        assert got.structured_content["record"]["content"]["text"] == "in process"
        assert refused(await call_tool(c, "summarize", {})) == "unknown_tool"
        assert refused(await call_tool(c, "forget", {"memory_id": ""})) == "validation_error"
    headers = {"authorization": "Bearer t", "x-api-key": "k", "cookie": "session=1"}
    assert forwarded_credential(headers) == {"Authorization": "Bearer t", "X-API-Key": "k"}
