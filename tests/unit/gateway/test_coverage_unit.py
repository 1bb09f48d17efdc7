"""The pure parts of app/gateway/coverage.py."""

from __future__ import annotations

from app.gateway.coverage import Cover, evicted_keys, parse


def test_parse_reads_the_worker_fields() -> None:
    assert parse(["2:41", "1000", "3600"]) == Cover(2, 41, 1000, 3600)


def test_parse_is_none_until_the_worker_recorded_all_three() -> None:
    assert parse([None, "1000", "3600"]) is None
    assert parse(["2:41", None, "3600"]) is None
    assert parse(["2:41", "1000", None]) is None
    assert parse(["garbage", "1000", "3600"]) is None


def test_unexpired_until_the_shortest_ttl_has_run_since_the_hotset_began() -> None:
    c = Cover(0, 0, since_ms=10_000, ttl_min_s=60)
    assert c.unexpired(10_000 + 59_999)
    assert not c.unexpired(10_000 + 60_000)


def test_evicted_keys_of_one_server_or_a_cluster() -> None:
    assert evicted_keys({"evicted_keys": 0, "expired_keys": 9}) == 0
    assert evicted_keys({"evicted_keys": 3}) == 3
    nodes = {"127.0.0.1:7000": {"evicted_keys": 0}, "127.0.0.1:7001": {"evicted_keys": 2}}
    assert evicted_keys(nodes) == 2
