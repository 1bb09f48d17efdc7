"""A gateway served over real HTTP (`memstream gateway` in a subprocess), for clients that run in
another process or need a socket: the sync SDK, the MCP server, the examples."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt

from app import devstack
from app.auth.apikeys import ApiKeyStore
from app.auth.principal import Role
from app.redis_client import create_redis
from app.settings import Settings
from tests.support.auth import HS_SECRET, claims
from tests.support.stack import Proc, Stack


@dataclass
class LiveGateway:
    url: str
    settings: Settings
    proc: Proc

    async def key(self, tenant: str, *roles: Role, agent: str | None = None) -> str:
        """A new API key of `tenant` (stored in the gateway's Redis, as `memstream keys create` does)."""
        client = create_redis(self.settings, gauged=False)
        try:
            key, _ = await ApiKeyStore(client).create(tenant, frozenset(roles or (Role.WRITER,)), agent)
        finally:
            await client.aclose()
        return key

    def token(self, tenant: str, *roles: str, agent: str | None = None) -> str:
        """An HS256 JWT the gateway accepts (no issuer or audience configured)."""
        payload = claims(tenant, roles=list(roles or ("writer",)), iss=None, aud=None, agent_id=agent)
        return jwt.encode(payload, HS_SECRET, algorithm="HS256")

    def dev_headers(self, tenant: str) -> dict[str, str]:
        return {self.settings.dev_tenant_header: tenant}


@contextlib.contextmanager
def live_gateway(stack: Stack, tmp: Path, **extra_env: str) -> Iterator[LiveGateway]:
    port = devstack.free_port()
    env = {
        **stack.env,
        "MEMSTREAM_GATEWAY_HOST": "127.0.0.1",
        "MEMSTREAM_GATEWAY_PORT": str(port),
        "MEMSTREAM_JWT_HS256_SECRET": HS_SECRET,
        **extra_env,
    }
    proc = Proc(["gateway"], env, tmp / f"gateway-{port}.log").start()
    try:
        assert proc.proc is not None
        devstack.wait_for_port(port, 60, proc.proc)
        settings = stack.settings(**{k.removeprefix("MEMSTREAM_").lower(): v for k, v in env.items()})
        yield LiveGateway(f"http://127.0.0.1:{port}", settings, proc)
    finally:
        proc.stop()
