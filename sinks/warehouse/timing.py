"""Warehouse statement timing: every statement memstream runs goes through `execute`, which
observes `memstream_warehouse_query_seconds{statement}` and logs a statement slower than
`MEMSTREAM_WAREHOUSE_SLOW_QUERY_S` on the `memstream.warehouse.slow` logger. The log names the
statement, its duration, outcome and Snowflake query id (to look it up in QUERY_HISTORY), never
the SQL text or its values: they may hold memory content."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from app import metrics

slow_log = logging.getLogger("memstream.warehouse.slow")


def execute(cur: Any, statement: str, sql: str, params: Sequence[Any] | None = None, slow_s: float = 1.0) -> Any:
    """`cur.execute(sql, params)`, timed under the name `statement`."""
    started = time.perf_counter()
    outcome = "error"
    try:
        result = cur.execute(sql, list(params)) if params is not None else cur.execute(sql)
        outcome = "ok"
        return result
    finally:
        elapsed = time.perf_counter() - started
        metrics.WAREHOUSE_QUERY_SECONDS.labels(statement).observe(elapsed)
        if elapsed >= slow_s:
            slow_log.warning(
                "slow warehouse statement %s: %.3fs (%s, query id %s)",
                statement,
                elapsed,
                outcome,
                getattr(cur, "sfqid", None) or "-",
            )
