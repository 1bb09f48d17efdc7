"""Gateway Prometheus metrics (the process-wide registry shared with app.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "memstream_gateway_request_seconds",
    "Gateway request latency by route template and status class",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READS = Counter("memstream_gateway_reads_total", "Record reads by where they were answered", ["source"])
WAREHOUSE_CALLS = Counter(
    "memstream_gateway_warehouse_calls_total", "Warehouse queries from the gateway, by outcome", ["outcome"]
)
PUBLISHED = Counter(
    "memstream_gateway_published_total", "Events the gateway published, by outcome", ["outcome"]
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    # Status class, except 429 keeps its own value: rate limiting is alerted on separately.
    label = "429" if status == 429 else f"{status // 100}xx"
    REQUEST_SECONDS.labels(method, route, label).observe(seconds)
