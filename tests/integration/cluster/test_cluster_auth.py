"""API keys, rate limits and the signature replay guard on Redis Cluster (the same tests as on
one server): the two buckets of a request share the tenant's slot, API key hashes do not."""

from tests.integration.auth.test_auth_redis import (  # noqa: F401
    ardis,
    ardis2,
    test_api_key_lifecycle,
    test_disabled_limits,
    test_expired_api_key_refused_at_once,
    test_limit_is_atomic_under_concurrency,
    test_script_reloads_after_flush,
    test_signed_request_replay_and_expiry_refused,
    test_tokens_refill_and_buckets_expire,
    test_two_instances_share_one_limit,
)
