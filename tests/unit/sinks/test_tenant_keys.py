"""The writer's per-tenant key cache names exactly the keys `sinks.hotset.keys` names."""

from __future__ import annotations

import pytest

from app.models import MemoryType
from sinks.hotset import keys
from sinks.hotset.writer import _tenant_keys


@pytest.mark.parametrize("tenant", ["acme", "t-1{x}", "ünï"])
def test_cached_prefixes_name_the_same_keys(tenant: str) -> None:
    tk = _tenant_keys(tenant)
    assert tk.recent == keys.recent(tenant)
    assert tk.by_type == {m.value: keys.by_type(tenant, m.value) for m in MemoryType}
    assert tk.session + "s1" == keys.by_session(tenant, "s1")
    assert tk.agent + "a1" == keys.by_agent(tenant, "a1")
    assert tk.term + "kafka" == keys.term(tenant, "kafka")
    assert tk.memory + "m-1" == keys.memory(tenant, "m-1")
    assert tk.seen + "e-1" == keys.seen(tenant, "e-1")
    assert tk.dedupe + "d1" == keys.dedupe(tenant, "d1")
    assert tk.key_history + "decision\x1fdb" == keys.key_history(tenant, "decision\x1fdb")
    assert tk.active == keys.active(tenant)
    assert tk.active_index == keys.active_index_of(tenant)
