"""Every per-tenant Redis key carries the tenant as its hash tag (one cluster slot per tenant);
the keys without one are the few single-key globals docs/adr/0011 lists."""

from __future__ import annotations

import inspect

from redis.crc import key_slot

from sinks.hotset import keys

GLOBAL = {"api_key", "api_key_unknown", "signature_seen"}  # looked up before a tenant is known


def tenant_key_functions() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(keys, inspect.isfunction)
        if fn.__module__ == keys.__name__
        and not name.startswith("_")
        and list(inspect.signature(fn).parameters)[:1] == ["tenant"]
    ]


def test_every_tenant_key_is_in_the_tenant_slot() -> None:
    names = tenant_key_functions()
    assert len(names) >= 25
    for tenant in ("acme", "t-0123456789ab", "a.b_c-9"):  # tenant ids never hold braces (TenantId)
        slot = key_slot(keys.stats(tenant).encode())
        for name in names:
            fn = getattr(keys, name)
            args = ["x"] * (len(inspect.signature(fn).parameters) - 1)
            key = fn(tenant, *args)
            assert key.startswith(f"ms:{{{tenant}}}:"), (name, key)
            assert key_slot(key.encode()) == slot, name


def test_the_keys_without_a_tenant_are_the_known_globals() -> None:
    untagged = {
        name
        for name, fn in inspect.getmembers(keys, inspect.isfunction)
        if fn.__module__ == keys.__name__
        and "tenant" not in inspect.signature(fn).parameters
        and name not in {"scope", "active_field"}  # not keys: a scope token, a hash field
    }
    assert untagged == GLOBAL
    assert {keys.WARM_MARKER, keys.GLOBAL_STATS} == {"ms:global:warm", "ms:global:stats"}
