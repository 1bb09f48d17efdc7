"""Gateway Prometheus metrics (the process-wide registry shared with app.metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "memstream_gateway_request_seconds",
    "Gateway request latency by route template and status class",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READS = Counter("memstream_gateway_reads_total", "Record reads by where they were answered", ["source"])
READS_HOTSET, READS_WAREHOUSE = READS.labels("hotset"), READS.labels("warehouse")  # per retrieve
WAREHOUSE_CALLS = Counter(
    "memstream_gateway_warehouse_calls_total", "Warehouse queries from the gateway, by outcome", ["outcome"]
)
PUBLISHED = Counter("memstream_gateway_published_total", "Events the gateway published, by outcome", ["outcome"])
SUBSCRIBERS = Gauge("memstream_gateway_subscribers", "Open change-feed subscriptions (GET /api/v2/subscribe)")
SUBSCRIBERS_DROPPED = Counter(
    "memstream_gateway_subscribers_dropped_total",
    "Change-feed subscriptions ended by the gateway, by reason",
    ["reason"],
)


_REQUEST_CHILDREN: dict[tuple[str, str, int], Any] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    # The labelled child is looked up once per (method, route, status): `labels()` takes a lock
    # and builds the label tuple on every call. Routes are templates, so the dict stays small.
    child = _REQUEST_CHILDREN.get((method, route, status))
    if child is None:
        # Status class, except 429 keeps its own value: rate limiting is alerted on separately.
        label = "429" if status == 429 else f"{status // 100}xx"
        child = _REQUEST_CHILDREN.setdefault((method, route, status), REQUEST_SECONDS.labels(method, route, label))
    child.observe(seconds)
