"""examples/ run in short mode against a real gateway and broker, and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from app.auth.principal import Role
from tests.support.gateway import Gateway
from tests.support.live_gateway import LiveGateway, live_gateway
from tests.support.stack import ROOT, Stack


@pytest.fixture(scope="module")
def live(stack: Stack, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    del gateway  # the session worker is ready once this fixture is
    with live_gateway(stack, tmp_path_factory.mktemp("examples-gw")) as gw:
        yield gw


def run_example(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


async def test_agent_loop_and_records_consumer(live: LiveGateway, stack: Stack, tenant: str) -> None:
    key = await live.key(tenant, Role.WRITER)
    loop = run_example("agent_loop.py", {"MEMSTREAM_GATEWAY_URL": live.url, "MEMSTREAM_API_KEY": key}, "--short")
    assert loop.returncode == 0, loop.stdout + loop.stderr
    out = loop.stdout
    assert out.count("--- turn ") == 6
    assert "[decisions] The meetup moves to the City Library." in out.split("--- turn 6")[1]
    assert "The meetup is at the Blue Cafe." in out.split("--- turn 1")[1].split("--- turn 2")[0]
    assert "booker acknowledged" in out

    records = run_example(
        "records_consumer.py",
        {"MEMSTREAM_KAFKA_BOOTSTRAP": stack.env["MEMSTREAM_KAFKA_BOOTSTRAP"]},
        "--short", "--from-beginning", "--tenant", tenant, "--max", "5",
    )  # fmt: skip
    assert records.returncode == 0, records.stderr
    lines = records.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith(f"{tenant}/") for line in lines)


def test_agent_loop_against_the_dev_tenant_header(live: LiveGateway, tenant: str) -> None:
    env = {"MEMSTREAM_GATEWAY_URL": live.url, "MEMSTREAM_API_KEY": "", "MEMSTREAM_BEARER_TOKEN": ""}
    loop = run_example("agent_loop.py", env, "--short", "--dev-tenant", tenant)
    assert loop.returncode == 0, loop.stdout + loop.stderr
