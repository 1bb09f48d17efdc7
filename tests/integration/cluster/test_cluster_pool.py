"""The pool that waits and the pool gauges, on Redis Cluster (the same tests as on one server):
the cluster client bounds its callers to MEMSTREAM_REDIS_MAX_CONNECTIONS and makes the rest wait;
the gauges add up the per-node pools."""

from tests.integration.app.test_redis_pool import (  # noqa: F401
    test_a_hundred_concurrent_reads_share_two_connections,
    test_past_the_bound_the_wait_ends_in_a_clear_error,
    test_the_gateway_answers_503_when_the_pool_stays_full,
)
from tests.integration.warehouse.test_query_timing import test_redis_pool_gauges  # noqa: F401
