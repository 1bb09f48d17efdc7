"""The change feed (GET /api/v2/subscribe, a gateway process) on Redis Cluster: the tenant's
stream shares its slot with the hotset write that appends to it (the same tests as on one server)."""

from tests.integration.gateway.test_subscribe_feed import (  # noqa: F401
    live,
    test_a_change_arrives_within_a_second_of_wait_visible,
    test_agent_scoped_key_and_bad_parameters,
    test_filters_and_privacy,
    test_resume_beyond_the_horizon_says_so,
)
