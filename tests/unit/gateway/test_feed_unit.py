"""The change feed's pure parts: who sees an entry, how it is framed, and the SDK's decoding."""

from __future__ import annotations

import json

import pytest
from memstream_client.feed import ChangeEvent, Cursor, SseDecoder, SubscriptionDropped

from app.gateway.feed import HEARTBEAT, STREAM_ID, FeedFilter, event_data, frame, matches, parse_id

ENTRY = {"kind": "created", "id": "m1", "type": "decision", "vis": "internal", "ses": "s1", "ag": "planner", "ta": ""}


@pytest.mark.parametrize(
    ("f", "seen"),
    [
        (FeedFilter(), True),
        (FeedFilter(channel_visibility="private"), True),
        (FeedFilter(channel_visibility="internal"), True),
        (FeedFilter(channel_visibility="public"), False),
        (FeedFilter(type="decision"), True),
        (FeedFilter(type="rule"), False),
        (FeedFilter(session_id="s1"), True),
        (FeedFilter(session_id="s2"), False),
        (FeedFilter(agent_id="planner"), True),
        (FeedFilter(agent_id="coder"), False),
    ],
)
def test_matches_follows_the_read_rules(f: FeedFilter, seen: bool) -> None:
    assert matches(ENTRY, f) is seen


def test_an_entry_without_visibility_is_private_and_a_handoff_belongs_to_both_agents() -> None:
    assert not matches({"id": "m"}, FeedFilter(channel_visibility="internal"))
    handoff = {**ENTRY, "vis": "public", "type": "handoff", "ag": "coder", "ta": "planner"}
    assert matches(handoff, FeedFilter(agent_id="planner")) and matches(handoff, FeedFilter(agent_id="coder"))
    assert not matches(handoff, FeedFilter(agent_id="reviewer"))


def test_frames_decode_back_through_the_sdk() -> None:
    rec = {"memory_id": "m1", "content": {"text": "line one\nline two"}}
    raw = frame("created", event_data({**ENTRY, "rec": json.dumps(rec)}), "17-0") + HEARTBEAT
    raw += frame("error", {"error": {"code": "slow_subscriber", "message": "m", "details": {"last_event_id": "17-0"}}})
    decoder, cursor, seen = SseDecoder(), Cursor(), []
    with pytest.raises(SubscriptionDropped) as dropped:
        for line in raw.decode().split("\n"):
            msg = decoder.line(line)
            if msg is not None and (ev := cursor.take(msg)) is not None:
                seen.append(ev)
    assert seen == [ChangeEvent("created", "17-0", seen[0].data)]
    assert seen[0].record == rec and seen[0].memory_id == "m1" and seen[0].data["visibility"] == "internal"
    assert dropped.value.code == "slow_subscriber" and dropped.value.details == {"last_event_id": "17-0"}
    assert cursor.headers() == {"Last-Event-ID": "17-0"}


def test_ready_moves_the_cursor_without_an_event() -> None:
    decoder, cursor = SseDecoder(), Cursor()
    msgs = [decoder.line(x) for x in frame("ready", {"last_event_id": "5-1"}, "5-1").decode().split("\n")]
    [msg] = [m for m in msgs if m is not None]
    assert cursor.take(msg) is None and cursor.last_event_id == "5-1"


def test_stream_ids() -> None:
    assert STREAM_ID.match("1700000000000-12") and not STREAM_ID.match("yesterday")
    assert parse_id("2-0") > parse_id("1-99")
