"""MEMORY_VECTORS through the warehouse sink on the real connector against the emulator (no
Kafka): a newer version wins, a replay changes nothing, a drop leaves a row without a vector that
an older vector replayed never refills, a re-embedding of the same version replaces it."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from app.settings import Settings
from sinks.warehouse import MemoryVectorsTable, WarehouseSink
from tests.support.warehouse import query

V1, V2, V3 = ("0" * 31 + str(i) for i in (1, 2, 3))


@pytest.fixture
def sink(settings: Settings) -> Iterator[WarehouseSink]:
    s = WarehouseSink(settings, MemoryVectorsTable())
    yield s
    s.close()


def b64(seed: int, dims: int = 64) -> str:
    v = np.random.default_rng(seed).standard_normal(dims).astype("<f2")
    return base64.b64encode(v.tobytes()).decode()


def row(tenant: str, mid: str, version: str, seed: int | None, model: str = "wordllama-l2-64", dims: int = 64) -> bytes:
    if seed is None:
        return orjson.dumps(MemoryVectorsTable.row(tenant, mid, version, None, None, None))
    return orjson.dumps(MemoryVectorsTable.row(tenant, mid, version, model, dims, b64(seed, dims)))


def write(sink: WarehouseSink, *values: bytes) -> None:
    for i, v in enumerate(values):
        assert sink.add(v, "memory.records", 0, i) is None
    sink.flush()


def rows(settings: Settings, tenant: str) -> dict[str, tuple[str, str | None, int | None, str | None]]:
    got = query(
        settings,
        "SELECT id, version::STRING, model, dims, vector FROM MEMORY_VECTORS WHERE tenant_id = %s",
        (tenant,),
    )
    return {str(r[0]): (str(r[1]).split(".")[0].zfill(32), r[2], r[3], r[4]) for r in got}


def test_vectors_merge_by_version_and_drops_keep_a_guard(sink: WarehouseSink, settings: Settings, tenant: str) -> None:
    write(sink, row(tenant, "a", V1, 1), row(tenant, "b", V1, 2), row(tenant, "c", V2, 3))
    first = rows(settings, tenant)
    assert first["a"] == (V1, "wordllama-l2-64", 64, b64(1))
    assert set(first) == {"a", "b", "c"}
    write(sink, row(tenant, "a", V1, 1), row(tenant, "b", V1, 2), row(tenant, "c", V2, 3))  # a replay
    write(sink, row(tenant, "c", V1, 9))  # an older version replayed
    assert rows(settings, tenant) == first

    # A newer version wins; in one batch the newest per memory wins.
    write(sink, row(tenant, "a", V2, 4), row(tenant, "b", V3, 6), row(tenant, "b", V2, 5))
    got = rows(settings, tenant)
    assert got["a"] == (V2, "wordllama-l2-64", 64, b64(4)) and got["b"][0] == V3 and got["b"][3] == b64(6)

    # A drop (the memory was deleted) leaves the delete's version without a vector...
    write(sink, row(tenant, "c", V3, None), row(tenant, "d", V2, None))
    got = rows(settings, tenant)
    assert got["c"] == (V3, None, None, None) and got["d"] == (V2, None, None, None)
    # ...which a replayed vector of an older or the same version never refills.
    write(sink, row(tenant, "c", V2, 3), row(tenant, "c", V3, 3), row(tenant, "d", V1, 7))
    got = rows(settings, tenant)
    assert got["c"] == (V3, None, None, None) and got["d"] == (V2, None, None, None)

    # The agent's vector of the same version and another model changes nothing (as in the hotset)...
    write(sink, row(tenant, "a", V2, 8, model="wordllama-l2-128", dims=128))
    assert rows(settings, tenant)["a"] == (V2, "wordllama-l2-64", 64, b64(4))
    # ...a re-embedding (`memstream reembed`) replaces it, and then the agent's replay does not.
    reembed = WarehouseSink(settings, MemoryVectorsTable(reembed=True))
    try:
        write(reembed, row(tenant, "a", V2, 8, model="wordllama-l2-128", dims=128), row(tenant, "c", V3, 9))
        write(reembed, row(tenant, "a", V2, 8, model="wordllama-l2-128", dims=128))  # its replay: no change
    finally:
        reembed.close()
    got = rows(settings, tenant)
    assert got["a"] == (V2, "wordllama-l2-128", 128, b64(8, 128)) and got["c"] == (V3, None, None, None)
    write(sink, row(tenant, "a", V2, 4))
    assert rows(settings, tenant)["a"] == (V2, "wordllama-l2-128", 128, b64(8, 128))
