"""Prometheus metrics shared by the worker and the gateway (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGEST_EVENTS = Counter("memstream_ingest_events_total", "Events handled by the ingest agent, by outcome", ["outcome"])
REDACTIONS = Counter("memstream_redactions_total", "Secrets redacted, by kind", ["kind"])
INGEST_BATCH_SECONDS = Histogram(
    "memstream_ingest_batch_seconds",
    "Time to process one ingest batch (policies, publish, hotset write)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEPENDENCY_UP = Gauge("memstream_dependency_up", "1 when the dependency answered last time", ["dependency"])
DEPENDENCY_RETRIES = Counter(
    "memstream_dependency_retries_total", "Retried operations against a dependency", ["dependency"]
)
SINK_ROWS = Counter("memstream_sink_rows_total", "Rows merged into the warehouse, by result", ["result"])
SINK_BATCH_SECONDS = Histogram(
    "memstream_sink_batch_seconds",
    "Time to stage and merge one warehouse batch",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_LAG_SECONDS = Gauge(
    "memstream_sink_lag_seconds", "Age of the newest record merged into the warehouse at merge time"
)
WAREHOUSE_QUERY_SECONDS = Histogram(
    "memstream_warehouse_query_seconds",
    "Time of one warehouse statement, by statement name",
    ["statement"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WAREHOUSE_CONNECTIONS = Gauge(
    "memstream_warehouse_connections",
    "Warehouse sessions of this process, by client (sink, gateway) and state (open, in_use)",
    ["client", "state"],
)
REDIS_POOL_CONNECTIONS = Gauge(
    "memstream_redis_pool_connections",
    "Redis connection pools of this process: in_use, idle, max connections and waiting requests",
    ["state"],
)
EMBEDDED = Counter("memstream_embedded_total", "Memories embedded by the embedding agent")
EMBED_LAG_SECONDS = Gauge(
    "memstream_embed_lag_seconds", "Age of the newest record the embedding agent wrote, at write time"
)
