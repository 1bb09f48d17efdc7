"""Hash tags keep a tenant in one slot: after writes, supersession, a handoff and its ack, search,
context and the change feed, every key of the tenant sits in one slot on one node."""

from __future__ import annotations

import redis

from tests.integration.gateway import test_gateway as scenarios  # a module: its tests are not collected here
from tests.support.gateway import Gateway
from tests.support.stack import Stack


async def test_every_key_of_a_tenant_is_in_one_slot(stack: Stack, gateway: Gateway, tenant: str) -> None:
    assert stack.cluster and len(stack.redis_nodes) == 3
    await scenarios.test_context_assembles_sections_in_prompt_order(gateway, tenant)
    await scenarios.test_handoff_create_list_ack_exactly_once(gateway, tenant)
    await scenarios.test_search_ranks_filters_and_respects_visibility(gateway, tenant)
    found: dict[int, list[str]] = {}
    slots: set[int] = set()
    for node in stack.redis_nodes:
        with redis.Redis(port=node.port, decode_responses=True) as c:
            names = list(c.scan_iter(match=f"*{tenant}*", count=1000))
            slots.update(int(c.execute_command("CLUSTER", "KEYSLOT", n)) for n in names)
            if names:
                found[node.port] = names
    names = [n for ns in found.values() for n in ns]
    assert len(names) > 20  # memories, indexes, postings, ledger, feed, stats...
    assert all(f"{{{tenant}}}" in n for n in names), [n for n in names if f"{{{tenant}}}" not in n]
    assert len(slots) == 1 and len(found) == 1, (slots, {p: len(ns) for p, ns in found.items()})
