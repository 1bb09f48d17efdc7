"""Pure parts of the load tool: what an agent does in one turn, and the report of what happened.

No I/O here, so tests/unit/load checks them in milliseconds.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Endpoint labels, in report order. A search that the hotset could not fill (fewer hits than its
# limit) also asks the warehouse: it is reported apart, as `search+warehouse`.
ENDPOINTS = (
    "context",
    "search",
    "search+warehouse",
    "store",
    "store_visible",
    "retrieve",
    "handoff_create",
    "handoff_list",
    "handoff_ack",
)


@dataclass(frozen=True)
class TurnMix:
    """Expected calls per agent turn. An agent turn: read its context, search, write the user's
    message and its own reply, sometimes a decision it must read back at once (`wait=visible`),
    re-read one of its memories, hand work to a peer, check its inbox and acknowledge what is there."""

    context: float = 1.0
    search: float = 0.8
    stores: int = 2
    store_visible: float = 0.15
    retrieve: float = 0.4
    handoff_create: float = 0.05
    handoff_list: float = 0.25

    def expected_requests(self, ack_rate: float | None = None) -> float:
        """Mean requests per turn; every handoff created is acknowledged once (by its receiver)."""
        acks = self.handoff_create if ack_rate is None else ack_rate
        return (
            self.context
            + self.search
            + self.stores
            + self.store_visible
            + self.retrieve
            + self.handoff_create
            + self.handoff_list
            + acks
        )


def _happens(rng: random.Random, p: float) -> int:
    """Calls of an op with expected count p: floor(p) always, one more with probability frac(p)."""
    whole = math.floor(p)
    return whole + (1 if rng.random() < p - whole else 0)


def plan_turn(mix: TurnMix, rng: random.Random, can_retrieve: bool, has_peers: bool) -> list[str]:
    """The ops of one turn in the order an agent does them (reads before writes, inbox last).
    Acks are not planned: they follow from what the inbox listing returns."""
    ops: list[str] = []
    ops += ["context"] * _happens(rng, mix.context)
    ops += ["search"] * _happens(rng, mix.search)
    if can_retrieve:
        ops += ["retrieve"] * _happens(rng, mix.retrieve)
    ops += ["store"] * mix.stores
    ops += ["store_visible"] * _happens(rng, mix.store_visible)
    if has_peers:
        ops += ["handoff_create"] * _happens(rng, mix.handoff_create)
    ops += ["handoff_list"] * _happens(rng, mix.handoff_list)
    return ops


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ascending values; nan when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class EndpointStats:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, latency_s: float, error: str | None) -> None:
        self.latencies_s.append(latency_s)
        if error is not None:
            self.errors[error] += 1


def endpoint_rows(stats: Mapping[str, EndpointStats], duration_s: float) -> list[dict[str, object]]:
    """One row per endpoint (and a `total`): count, rate, p50/p95/p99/max in ms, errors by kind."""
    rows: list[dict[str, object]] = []
    everything: list[float] = []
    all_errors: Counter[str] = Counter()
    ordered = [e for e in ENDPOINTS if e in stats] + sorted(set(stats) - set(ENDPOINTS))
    for name in ordered:
        s = stats[name]
        everything += s.latencies_s
        all_errors.update(s.errors)
        rows.append(_row(name, s.latencies_s, s.errors, duration_s))
    rows.append(_row("total", everything, all_errors, duration_s))
    return rows


def _row(name: str, latencies: Iterable[float], errors: Counter[str], duration_s: float) -> dict[str, object]:
    ordered = sorted(latencies)
    ms = [v * 1000 for v in ordered]
    return {
        "endpoint": name,
        "requests": len(ms),
        "rps": round(len(ms) / duration_s, 2) if duration_s > 0 else 0.0,
        "p50_ms": _r(percentile(ms, 50)),
        "p95_ms": _r(percentile(ms, 95)),
        "p99_ms": _r(percentile(ms, 99)),
        "max_ms": _r(ms[-1]) if ms else None,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 1)


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the load started
    rss_bytes: int
    cpu_percent: float  # of one core, since the previous sample


def rss_drift(samples: Sequence[Sample], warmup_s: float) -> dict[str, float | None]:
    """RSS at the first sample after warm-up and at the last one, growth in percent, mean CPU
    after warm-up. Growth is None when no sample falls after the warm-up."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if not after:
        return {"rss_warm_mb": None, "rss_end_mb": None, "growth_pct": None, "cpu_mean_pct": None}
    first, last = after[0], after[-1]
    return {
        "rss_warm_mb": round(first.rss_bytes / 2**20, 1),
        "rss_end_mb": round(last.rss_bytes / 2**20, 1),
        "growth_pct": round((last.rss_bytes - first.rss_bytes) / first.rss_bytes * 100, 1),
        "cpu_mean_pct": round(sum(s.cpu_percent for s in after) / len(after), 1),
    }


def format_rows(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    return "\n".join(lines)
