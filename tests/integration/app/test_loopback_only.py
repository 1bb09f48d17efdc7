"""memstream talks to what it is configured to talk to, nothing else: every socket a Kafka, Redis and
Snowflake client opens (the connector included, which by default probes cloud metadata services
at connect) goes to loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.stack import ROOT, Stack

PROBE = textwrap.dedent(
    """
    import ipaddress, json, sys

    seen = []

    def hook(event, args):
        if event == "socket.connect":
            addr = args[1]
            if isinstance(addr, tuple):
                seen.append(addr[0])

    sys.addaudithook(hook)

    from app.kafka import ensure_topics
    from app.redis_client import create_redis
    from app.settings import Settings
    from app.snowflake_conn import connect
    import asyncio

    settings = Settings()
    conn = connect(settings)
    conn.cursor().execute("SELECT 1").fetchall()
    conn.close()
    ensure_topics(settings)

    async def ping():
        r = create_redis(settings)
        await r.ping()
        await r.aclose()

    asyncio.run(ping())
    print(json.dumps(sorted({a for a in seen if not ipaddress.ip_address(a).is_loopback} | {"checked"})))
    """
)


def test_clients_connect_only_to_loopback(stack: Stack) -> None:
    env = {**os.environ, **stack.env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["checked"]
