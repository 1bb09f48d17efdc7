"""GET /api/v2/subscribe on the real stack: gateways served by uvicorn in subprocesses, the session
worker writing the feed stream, real Redis. SSE is read off the socket as a client would."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from app.auth.principal import Role
from sinks.hotset import keys
from tests.support.gateway import Gateway
from tests.support.live_gateway import LiveGateway, live_gateway
from tests.support.stack import Stack, wait_until

HEARTBEAT_S = 1.0


@pytest.fixture(scope="module")
def live(stack: Stack, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    del gateway  # the session worker is ready once this fixture is
    env = {"MEMSTREAM_SUBSCRIBE_HEARTBEAT_S": str(HEARTBEAT_S)}
    with live_gateway(stack, tmp_path_factory.mktemp("sse-gw"), **env) as gw:
        yield gw


@dataclass
class Sse:
    event: str = "message"
    id: str | None = None
    data: Any = None


@dataclass
class Feed:
    """One open subscription, read line by line with a deadline per call."""

    response: httpx.Response
    lines: Iterator[str]
    heartbeats: list[float] = field(default_factory=list)

    def next(self, timeout_s: float = 10.0) -> Sse | None:
        """The next event; None when the stream ends. Heartbeats are counted, not returned."""
        deadline = time.monotonic() + timeout_s
        ev = Sse()
        for line in self.lines:
            if time.monotonic() > deadline:
                raise AssertionError(f"no event within {timeout_s}s")
            if line.startswith(":"):
                self.heartbeats.append(time.monotonic())
            elif line == "":
                if ev.data is not None:
                    return ev
            else:
                name, _, value = line.partition(": ")
                if name == "data":
                    ev.data = json.loads(value)
                elif name == "event":
                    ev.event = value
                elif name == "id":
                    ev.id = value
        return None

    def drain(self, seconds: float) -> list[Sse]:
        """Events that arrive within `seconds` (heartbeats keep lines coming, so the clock is read)."""
        deadline = time.monotonic() + seconds
        events: list[Sse] = []
        ev = Sse()
        for line in self.lines:
            if line.startswith(":"):
                self.heartbeats.append(time.monotonic())
            elif line == "" and ev.data is not None:
                events.append(ev)
                ev = Sse()
            elif line.startswith("data: "):
                ev.data = json.loads(line[6:])
            if time.monotonic() > deadline:
                break
        return events

    def until(self, pred: Any, timeout_s: float = 30.0) -> list[Sse]:
        """Events up to and including the first that satisfies `pred`."""
        deadline = time.monotonic() + timeout_s
        seen: list[Sse] = []
        while time.monotonic() < deadline:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            assert ev is not None, f"stream ended; saw {[(e.event, e.data) for e in seen]}"
            seen.append(ev)
            if pred(ev):
                return seen
        raise AssertionError("condition not met")


class subscribed:
    def __init__(self, gw: LiveGateway, tenant: str, *, transport: httpx.HTTPTransport | None = None, **kw: Any):
        headers = {**gw.dev_headers(tenant), **kw.pop("headers", {})}
        self.client = httpx.Client(base_url=gw.url, timeout=httpx.Timeout(30.0), transport=transport)
        self.request = self.client.build_request("GET", "/api/v2/subscribe", headers=headers, params=kw)

    def __enter__(self) -> Feed:
        r = self.client.send(self.request, stream=True)
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        self.response = r
        return Feed(r, r.iter_lines())

    def __exit__(self, *exc: object) -> None:
        self.response.close()
        self.client.close()


def store(gw: LiveGateway, tenant: str, text: str, **fields: Any) -> dict[str, Any]:
    body = {"type": "event", "content": {"text": text}, **fields}
    r = httpx.post(
        f"{gw.url}/api/v2/memory/store",
        params={"wait": "visible"},
        json=body,
        headers=gw.dev_headers(tenant),
        timeout=60,
    )
    assert r.status_code == 202 and r.json()["status"] == "visible", r.text
    out: dict[str, Any] = r.json()
    return out


def test_a_change_arrives_within_a_second_of_wait_visible(live: LiveGateway, tenant: str) -> None:
    with subscribed(live, tenant) as feed:
        ready = feed.next()
        assert ready is not None and ready.event == "ready" and ready.id is not None
        session = f"s-{uuid.uuid4().hex[:8]}"
        out = store(live, tenant, "the deploy window is Tuesday", session_id=session, agent_id="planner")
        returned = time.monotonic()
        [*_, ev] = feed.until(lambda e: e.data.get("memory_id") == out["memory_id"], timeout_s=5)
        delivered = time.monotonic() - returned
        assert delivered < 1.0, delivered
        assert ev.event == "created" and ev.id is not None and ev.id > ready.id
        assert ev.data["session_id"] == session and ev.data["agent_id"] == "planner"
        assert ev.data["record"]["content"]["text"] == "the deploy window is Tuesday"

        # A newer decision supersedes the older one; a delete arrives as such.
        first = store(live, tenant, "Use Postgres", type="decision", key="db")
        second = store(live, tenant, "Use Snowflake", type="decision", key="db")
        seen = feed.until(lambda e: e.event == "superseded")
        assert [(e.event, e.data["memory_id"]) for e in seen[-3:]] == [
            ("created", first["memory_id"]),
            ("created", second["memory_id"]),
            ("superseded", first["memory_id"]),
        ]
        assert seen[-1].data["superseded_by"] == second["memory_id"]
        r = httpx.delete(
            f"{live.url}/api/v2/memory/{second['memory_id']}",
            params={"wait": "visible"},
            headers=live.dev_headers(tenant),
            timeout=60,
        )
        assert r.status_code == 202, r.text
        [*_, gone] = feed.until(lambda e: e.event == "deleted")
        assert gone.data["memory_id"] == second["memory_id"] and gone.data["type"] == "decision"
        assert gone.data["record"] is None


def test_filters_and_privacy(live: LiveGateway, tenant: str) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    with (
        subscribed(live, tenant, channel_visibility="public") as public,
        subscribed(live, tenant) as trusted,
        subscribed(live, tenant, type="decision") as decisions,
        subscribed(live, tenant, session_id=session) as by_session,
    ):
        for feed in (public, trusted, decisions, by_session):
            assert (ev := feed.next()) is not None and ev.event == "ready"
        private = store(live, tenant, "salary of Ann", channel={"id": "dm", "visibility": "private"})
        internal = store(live, tenant, "ops roster", channel={"id": "ops", "visibility": "internal"})
        decision = store(live, tenant, "Ship on Friday", type="decision", key="ship")
        in_session = store(live, tenant, "session note", session_id=session)
        last = store(live, tenant, "release notes", channel={"id": "news", "visibility": "public"})

        def ids(feed: Feed, until: str) -> list[str]:
            return [e.data["memory_id"] for e in feed.until(lambda e: e.data.get("memory_id") == until)]

        everything = [private, internal, decision, in_session, last]
        assert ids(trusted, last["memory_id"]) == [m["memory_id"] for m in everything]
        # Stream order: had a private or internal memory been sent, it would come first.
        assert ids(public, last["memory_id"]) == [last["memory_id"]]
        assert ids(decisions, decision["memory_id"]) == [decision["memory_id"]]
        assert ids(by_session, in_session["memory_id"]) == [in_session["memory_id"]]

        # Nor is the deletion of a private memory shown to a public channel.
        r = httpx.delete(
            f"{live.url}/api/v2/memory/{private['memory_id']}",
            params={"wait": "visible"},
            headers=live.dev_headers(tenant),
            timeout=60,
        )
        assert r.status_code == 202, r.text
        after = store(live, tenant, "more news", channel={"id": "news", "visibility": "public"})
        assert [e.event for e in trusted.until(lambda e: e.data.get("memory_id") == after["memory_id"])] == [
            "deleted",
            "created",
        ]
        assert ids(public, after["memory_id"]) == [after["memory_id"]]


def test_agent_scoped_key_and_bad_parameters(live: LiveGateway, tenant: str) -> None:
    import asyncio

    key = asyncio.run(live.key(tenant, Role.READER, agent="planner"))
    url = f"{live.url}/api/v2/subscribe"
    r = httpx.get(url, params={"agent_id": "coder"}, headers={"X-API-Key": key})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    dev = live.dev_headers(tenant)
    for params, headers in (
        ({"chanel_visibility": "public"}, {}),
        ([("channel_visibility", "public"), ("channel_visibility", "private")], {}),
        ({"type": "nope"}, {}),
        ({}, {"Last-Event-ID": "yesterday"}),
    ):
        r = httpx.get(url, params=params, headers={**dev, **headers})
        assert r.status_code == 422, (params, r.text)
        assert set(r.json()["error"]) == {"code", "message", "details"}

    # The scoped key's feed is its agent's: its own memories and handoffs to it, no one else's.
    with subscribed(live, tenant, headers={"X-API-Key": key}) as feed:
        assert (ev := feed.next()) is not None and ev.event == "ready"
        store(live, tenant, "coder's note", agent_id="coder")
        mine = store(live, tenant, "planner's note", agent_id="planner")
        handoff = httpx.post(
            f"{live.url}/api/v2/handoffs",
            params={"wait": "visible"},
            json={"from_agent": "coder", "to_agent": "planner", "task": "review the plan"},
            headers=dev,
            timeout=60,
        )
        assert handoff.status_code == 202, handoff.text
        seen = feed.until(lambda e: e.event == "handoff_delivered")
        assert [e.data["memory_id"] for e in seen] == [mine["memory_id"], handoff.json()["memory_id"]]


def test_resume_after_a_gateway_restart_has_no_gap_or_repeat(
    stack: Stack, live: LiveGateway, tenant: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("sse-restart")
    env = {"MEMSTREAM_SUBSCRIBE_HEARTBEAT_S": str(HEARTBEAT_S)}
    written = [store(live, tenant, f"note {i}")["memory_id"] for i in range(3)]
    with (
        live_gateway(stack, tmp, **env) as first,
        subscribed(first, tenant, headers={"Last-Event-ID": "0-0"}) as feed,
    ):
        events = feed.until(lambda e: e.data.get("memory_id") == written[1])
        last_id = events[-1].id
        assert [e.data["memory_id"] for e in events[1:]] == written[:2]
        stopping = time.monotonic()
        first.proc.stop()
        # The gateway ends its streams before it drains: a final error tells the client to resume.
        rest = feed.until(lambda e: e.event == "error")
        assert rest[-1].data["error"]["code"] == "shutdown"
        assert time.monotonic() - stopping < 15
        assert first.proc.proc is not None and first.proc.proc.wait(15) is not None
    # Changes while no gateway serves this subscriber.
    written += [store(live, tenant, f"note {i}")["memory_id"] for i in range(3, 6)]
    with (
        live_gateway(stack, tmp, **env) as second,
        subscribed(second, tenant, headers={"Last-Event-ID": last_id}) as feed,
    ):
        ready = feed.next()
        assert ready is not None and ready.event == "ready" and ready.id == last_id
        events = feed.until(lambda e: e.data.get("memory_id") == written[-1])
        assert [e.data["memory_id"] for e in events] == written[2:]
        ids = [tuple(map(int, str(e.id).split("-"))) for e in events]
        assert ids == sorted(set(ids)) and all(i > tuple(map(int, str(last_id).split("-"))) for i in ids)
        # Nothing after the last change but heartbeats.
        feed.heartbeats.clear()
        assert feed.drain(HEARTBEAT_S * 3) == []
        assert feed.heartbeats


def test_resume_beyond_the_horizon_says_so(live: LiveGateway, tenant: str, rds: redis.Redis) -> None:
    store(live, tenant, "an old note")
    feed_key = keys.feed(tenant)
    [(old_id, _)] = rds.xrange(feed_key, count=1)
    store(live, tenant, "a note trimmed away")
    store(live, tenant, "a newer note")
    rds.xtrim(feed_key, maxlen=1, approximate=False)  # as MAXLEN trims a busy tenant's feed
    with subscribed(live, tenant, headers={"Last-Event-ID": old_id}) as feed:
        gap = feed.next()
        assert gap is not None and gap.event == "gap" and gap.data["last_event_id"] == old_id
        assert (ev := feed.next()) is not None and ev.event == "ready"
        assert (ev := feed.next()) is not None and ev.data["record"]["content"]["text"] == "a newer note"


def test_heartbeats_arrive(live: LiveGateway, tenant: str) -> None:
    with subscribed(live, tenant, type="rule") as feed:
        assert (ev := feed.next()) is not None and ev.event == "ready"
        start = time.monotonic()
        assert feed.drain(HEARTBEAT_S * 3.5) == []
        assert len(feed.heartbeats) >= 3
        gaps = [b - a for a, b in zip([start, *feed.heartbeats], feed.heartbeats, strict=False)]
        assert max(gaps) < HEARTBEAT_S * 2.5, gaps


def _dropped(gw: LiveGateway) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    for line in text.splitlines():
        if line.startswith('memstream_gateway_subscribers_dropped_total{reason="slow_subscriber"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_slow_subscriber_is_dropped_with_the_reason(
    stack: Stack, live: LiveGateway, tenant: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"MEMSTREAM_SUBSCRIBE_QUEUE_MAX": "16", "MEMSTREAM_SUBSCRIBE_STALL_S": "1"}
    with live_gateway(stack, tmp_path_factory.mktemp("sse-slow"), **env) as gw:
        # A client that stops reading: a small receive buffer fills quickly.
        small = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        with subscribed(gw, tenant, transport=small) as slow, subscribed(live, tenant) as fast:
            assert (ev := slow.next()) is not None and ev.event == "ready"
            assert (ev := fast.next()) is not None and ev.event == "ready"
            filler = "x" * 48_000
            last = ""
            # 160 memories of 48 KB: beyond what the socket buffers (up to 4 MB) and the queue hold.
            for b in range(8):
                items = [{"type": "event", "content": {"text": f"{b}-{i} {filler}"}} for i in range(20)]
                r = httpx.post(
                    f"{live.url}/api/v2/memory/batch",
                    params={"wait": "visible"},
                    json={"items": items},
                    headers=live.dev_headers(tenant),
                    timeout=120,
                )
                assert r.status_code == 202 and r.json()["accepted"] == 20, r.text
                last = r.json()["items"][-1]["memory_id"]
            # The pipeline was not held back: a reading subscriber has everything.
            assert len(fast.until(lambda e: e.data.get("memory_id") == last, timeout_s=120)) == 160
            wait_until(lambda: _dropped(gw) >= 1, timeout_s=60)
            # The slow client, reading again, finds the reason at the end and the stream closed.
            events = []
            while (ev := slow.next(30)) is not None:
                events.append(ev)
            assert events[-1].event == "error", [e.event for e in events[-3:]]
            error = events[-1].data["error"]
            assert error["code"] == "slow_subscriber" and "Last-Event-ID" in error["message"]
            assert 2 <= len(events) < 160  # what reached the client before it stopped reading
            assert error["details"]["last_event_id"] == events[-2].id
