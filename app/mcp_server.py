"""`memstream mcp`: memstream's memory as Model Context Protocol tools, over stdio or streamable HTTP.

The server is a client of the gateway (MEMSTREAM_GATEWAY_URL) through the Python SDK, never of
Redis, Kafka or the warehouse: every tool call is one gateway request made as exactly one
credential, so tenant scope, roles, agent binding, rate limits and audit apply as on the HTTP API.
On stdio that credential comes from the environment (MEMSTREAM_API_KEY or MEMSTREAM_BEARER_TOKEN);
on HTTP each request's own `Authorization: Bearer` or `X-API-Key` is forwarded, and the server
holds none. Tool input schemas are the gateway's request models (app.gateway.schemas).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from memstream_client import AsyncMemstreamClient, MemstreamError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from app.gateway.schemas import (
    ContextQuery,
    HandoffAckRequest,
    HandoffListQuery,
    HandoffRequest,
    QueryId,
    RetrieveQuery,
    SearchQuery,
    StoreRequest,
)
from app.settings import Settings

log = logging.getLogger(__name__)

WAIT = Field(
    False,
    description="true: return only once the write is readable (recall/get_memory see it); "
    "false: return as soon as it is durably accepted",
)


class RememberInput(StoreRequest):
    wait: StrictBool = WAIT


class ForgetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_id: QueryId
    wait: StrictBool = WAIT


class HandOffInput(HandoffRequest):
    wait: StrictBool = WAIT


class AckInput(HandoffAckRequest):
    handoff_id: Annotated[QueryId, Field(description="the handoff_id from list_handoffs")]


Handler = Callable[[AsyncMemstreamClient, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    model: type[BaseModel]
    run: Handler
    read_only: bool


def _fields(inp: BaseModel, *drop: str) -> dict[str, Any]:
    return inp.model_dump(mode="json", exclude_unset=True, exclude=set(drop))


async def _remember(c: AsyncMemstreamClient, inp: RememberInput) -> BaseModel:
    return await c.store(_fields(inp, "wait"), wait=inp.wait)


async def _recall(c: AsyncMemstreamClient, inp: SearchQuery) -> BaseModel:
    return await c.search(**_fields(inp))


async def _get_context(c: AsyncMemstreamClient, inp: ContextQuery) -> BaseModel:
    return await c.context(**_fields(inp))


async def _get_memory(c: AsyncMemstreamClient, inp: RetrieveQuery) -> BaseModel:
    return await c.retrieve(**_fields(inp))


async def _forget(c: AsyncMemstreamClient, inp: ForgetInput) -> BaseModel:
    return await c.forget(inp.memory_id, wait=inp.wait)


async def _hand_off(c: AsyncMemstreamClient, inp: HandOffInput) -> BaseModel:
    return await c.hand_off(_fields(inp, "wait"), wait=inp.wait)


async def _list_handoffs(c: AsyncMemstreamClient, inp: HandoffListQuery) -> BaseModel:
    return await c.handoffs(**_fields(inp))


async def _ack_handoff(c: AsyncMemstreamClient, inp: AckInput) -> BaseModel:
    return await c.ack_handoff(inp.handoff_id, agent_id=inp.agent_id, note=inp.note)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "remember",
        "Store one memory for later turns and other agents. Give `type` (event: something said or "
        "seen; decision, rule, identity, task: keep `key` stable, a newer one with the same key "
        "replaces the older; summary: needs `citations`; chunk: document text) and "
        "`content.text`; tasks need `content.status` (open, in_progress, blocked, done). Optional "
        "scopes: session_id, agent_id, user_id, channel (visibility public/internal/private). "
        "Secrets in the text are redacted before storage. Returns the memory_id.",
        RememberInput,
        _remember,
        False,
    ),
    ToolSpec(
        "recall",
        "Search memories by keywords (`q`), best first, each with its score and full record. "
        "Narrow with type, session_id or agent_id; replaced decisions are left out unless "
        "include_superseded is true.",
        SearchQuery,
        _recall,
        True,
    ),
    ToolSpec(
        "get_context",
        "The context for this turn: identity and rules, active decisions, open tasks, the latest "
        "summary and recent events of the session, within `budget_tokens`, in prompt order. Call "
        "it at the start of a turn with your session_id and agent_id.",
        ContextQuery,
        _get_context,
        True,
    ),
    ToolSpec(
        "get_memory",
        "One memory by its memory_id, with its full record (not found if it was forgotten, "
        "belongs to another tenant, or the channel may not see it).",
        RetrieveQuery,
        _get_memory,
        True,
    ),
    ToolSpec(
        "forget",
        "Forget a memory by its memory_id: it is deleted everywhere and no read returns it again.",
        ForgetInput,
        _forget,
        False,
    ),
    ToolSpec(
        "hand_off",
        "Hand a task to another agent: `to_agent` gets a packet with `task` and `text` (what it "
        "needs to know). It finds the packet with list_handoffs and acknowledges it with "
        "ack_handoff. Returns the handoff's memory_id (its handoff_id).",
        HandOffInput,
        _hand_off,
        False,
    ),
    ToolSpec(
        "list_handoffs",
        "Handoff packets addressed to `to_agent` (usually yourself), newest first; pending ones "
        "only unless include_acked is true.",
        HandoffListQuery,
        _list_handoffs,
        True,
    ),
    ToolSpec(
        "ack_handoff",
        "Acknowledge a handoff addressed to you, once (a second acknowledgement is refused with "
        "`already_acked`). Give your agent_id and optionally a note.",
        AckInput,
        _ack_handoff,
        False,
    ),
)
BY_NAME = {t.name: t for t in TOOLS}


def tool_list() -> list[types.Tool]:
    return [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.model.model_json_schema(),
            annotations=types.ToolAnnotations(read_only_hint=t.read_only, destructive_hint=t.name == "forget"),
        )
        for t in TOOLS
    ]


def error_result(code: str, message: str, details: Any = None) -> types.CallToolResult:
    """A tool error (isError) in the contract's error shape, readable by the model."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(body, default=str))], structured_content=body, is_error=True
    )


def ok_result(value: BaseModel) -> types.CallToolResult:
    data = value.model_dump(mode="json")
    return types.CallToolResult(content=[types.TextContent(text=json.dumps(data))], structured_content=data)


async def call_tool(
    client: AsyncMemstreamClient, name: str, arguments: Mapping[str, Any] | None
) -> types.CallToolResult:
    spec = BY_NAME.get(name)
    if spec is None:
        return error_result("unknown_tool", f"no tool named {name!r}", {"tools": list(BY_NAME)})
    try:
        inp = spec.model.model_validate(dict(arguments or {}))
    except ValidationError as exc:
        details = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        return error_result("validation_error", f"invalid arguments for {name}", details)
    try:
        return ok_result(await spec.run(client, inp))
    except MemstreamError as exc:
        return error_result(exc.code, exc.message, exc.details)


def forwarded_credential(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's own credential, as the gateway reads it: a bearer token or an API key."""
    out = {}
    if auth := headers.get("authorization"):
        out["Authorization"] = auth
    if key := headers.get("x-api-key"):
        out["X-API-Key"] = key
    return out


def gateway_url(settings: Settings) -> str:
    return settings.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_server(settings: Settings, transport: str) -> Server[Any]:
    url = gateway_url(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:  # one pool for every call
            yield {"http": http}

    def client_for(ctx: ServerRequestContext[Any, Any]) -> AsyncMemstreamClient:
        http: httpx.AsyncClient = ctx.lifespan_context["http"]
        if transport == "stdio":
            return AsyncMemstreamClient(
                url,
                api_key=_secret(settings.api_key),
                bearer_token=None if settings.api_key else _secret(settings.bearer_token),
                http_client=http,
            )
        request = ctx.request
        headers = forwarded_credential(request.headers) if request is not None else {}
        return AsyncMemstreamClient(url, headers=headers, http_client=http)

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tool_list())

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await call_tool(client_for(ctx), params.name, params.arguments)

    return Server(
        "memstream",
        version="0.1.0",
        instructions="Long-term memory shared by agents: call get_context at the start of a turn, "
        "remember what matters, recall by keywords, hand tasks to other agents.",
        lifespan=lifespan,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def run_mcp(settings: Settings, transport: str, host: str, port: int) -> int:
    import anyio

    if transport == "stdio":
        if not (settings.api_key or settings.bearer_token):
            log.warning("no MEMSTREAM_API_KEY or MEMSTREAM_BEARER_TOKEN: calls go to the gateway without a credential")
        server = build_server(settings, "stdio")

        async def serve() -> None:
            from mcp.server.stdio import stdio_server

            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        anyio.run(serve)
        return 0
    import uvicorn

    server = build_server(settings, "http")
    app = server.streamable_http_app(stateless_http=True, json_response=True, host=host)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), access_log=False, lifespan="on")
    return 0
