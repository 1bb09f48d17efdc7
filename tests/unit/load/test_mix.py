"""The load tool's pure parts: the turn mix, percentiles, the per-endpoint report, RSS drift."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from tests.load.mix import (
    EndpointStats,
    Sample,
    TurnMix,
    endpoint_rows,
    format_rows,
    percentile,
    plan_turn,
    rss_drift,
)


def test_turns_follow_the_mix_on_average() -> None:
    mix = TurnMix()
    rng = random.Random(1)
    turns = 20_000
    counts: Counter[str] = Counter()
    for _ in range(turns):
        counts.update(plan_turn(mix, rng, can_retrieve=True, has_peers=True))
    assert counts["context"] == turns and counts["store"] == 2 * turns
    for op, p in [("search", 0.8), ("store_visible", 0.15), ("retrieve", 0.4), ("handoff_create", 0.05)]:
        assert counts[op] / turns == pytest.approx(p, abs=0.015), op
    assert "handoff_ack" not in counts  # acks follow from the inbox, not from the plan
    per_turn = sum(counts.values()) / turns
    assert per_turn == pytest.approx(mix.expected_requests() - mix.handoff_create, abs=0.03)


def test_a_turn_reads_before_it_writes_and_skips_what_it_cannot_do() -> None:
    rng = random.Random(2)
    for _ in range(200):
        plan = plan_turn(TurnMix(), rng, can_retrieve=False, has_peers=False)
        assert "retrieve" not in plan and "handoff_create" not in plan
        assert plan[0] == "context"
        assert plan.index("store") > max((i for i, op in enumerate(plan) if op == "search"), default=-1)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_endpoint_rows_report_latency_rate_and_errors() -> None:
    stats = {"search": EndpointStats(), "context": EndpointStats()}
    for i in range(100):
        stats["context"].record((i + 1) / 1000, None)
    stats["search"].record(0.2, "504")
    stats["search"].record(0.1, None)
    rows = {r["endpoint"]: r for r in endpoint_rows(stats, duration_s=10)}
    assert [r for r in rows] == ["context", "search", "total"]  # report order, then the total
    ctx = rows["context"]
    assert (ctx["requests"], ctx["rps"], ctx["p50_ms"], ctx["p95_ms"], ctx["p99_ms"]) == (100, 10.0, 50.0, 95.0, 99.0)
    assert rows["search"]["errors"] == 1 and rows["search"]["error_kinds"] == {"504": 1}
    assert rows["total"]["requests"] == 102 and rows["total"]["errors"] == 1
    assert rows["total"]["max_ms"] == 200.0
    assert endpoint_rows({"x": EndpointStats()}, 1)[0]["p95_ms"] is None


def test_rss_drift_compares_first_sample_after_warmup_with_the_last() -> None:
    mb = 2**20
    samples = [Sample(0, 50 * mb, 90.0), Sample(10, 100 * mb, 20.0), Sample(20, 105 * mb, 30.0)]
    samples.append(Sample(30, 110 * mb, 40.0))
    d = rss_drift(samples, warmup_s=10)
    assert d == {"rss_warm_mb": 100.0, "rss_end_mb": 110.0, "growth_pct": 10.0, "cpu_mean_pct": 30.0}
    assert rss_drift(samples, warmup_s=99)["growth_pct"] is None


def test_format_rows_aligns_columns() -> None:
    text = format_rows([{"a": "x", "b": 1}, {"a": "long", "b": None}], ["a", "b"])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].split() == ["long", "-"]
    assert len({len(line) for line in lines}) == 1
