"""Vectors in the warehouse, the pure parts: the MEMORY_VECTORS staging row the embedding agent
builds from a hotset vector, the table's row check and MERGE, and what `memstream rebuild`
restores from its rows (only the restored version, only the configured model)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from agents.embed import vector_messages, warehouse_row, warehouse_rows
from app.embed import model_name
from app.models import MemoryRecord
from app.rebuild import vector_ops, vectors_sql
from app.settings import Settings
from sinks.hotset import VectorOp, vectors
from sinks.warehouse import MemoryVectorsTable

V1 = "0" * 31 + "1"
V2 = "0" * 31 + "2"
MODEL = "wordllama-l2-64"


def unit(dim: int = 64, seed: int = 1) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v)
    return out


def hot_value(version: str, vec: np.ndarray[Any, np.dtype[np.float32]], model: str = MODEL) -> bytes:
    meta = vectors.VectorMeta(model, vec.shape[0], "event", "s1", "a1", "public", 0)
    return vectors.encode(version, meta, vec)


def record(mid: str = "m1", version: str = V1, **over: Any) -> MemoryRecord:
    d: dict[str, Any] = {
        "tenant_id": "t",
        "memory_id": mid,
        "version": version,
        "event_id": f"e-{mid}",
        "type": "event",
        "content": {"text": "my dog is called Biscuit"},
        "session_id": "s9",
        "agent_id": "a9",
        "visibility": "internal",
        "occurred_at": datetime(2026, 11, 1, 10, tzinfo=UTC),
        "created_at": datetime(2026, 11, 1, 10, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 1, 10, tzinfo=UTC),
    }
    d.update(over)
    return MemoryRecord.model_validate(d)


def test_a_vector_is_staged_as_the_hotset_holds_it_and_a_drop_without_one() -> None:
    vec = unit()
    row = warehouse_row(VectorOp("t", "m1", V1, hot_value(V1, vec), 60))
    assert row.keys() == {"tenant_id", "id", "version", "model", "dims", "vector"}
    assert (row["model"], row["dims"], row["version"]) == (MODEL, 64, V1)
    raw = base64.b64decode(str(row["vector"]))
    assert np.array_equal(np.frombuffer(raw, dtype="<f2"), vec.astype("<f2"))
    assert warehouse_row(VectorOp("t", "m1", V2, None, 0)) == {"tenant_id": "t", "id": "m1", "version": V2}


def test_vectors_travel_on_memory_vectors_keyed_like_their_record() -> None:
    ops = [VectorOp("t", "m1", V1, hot_value(V1, unit()), 60), VectorOp("t", "m2", V2, None, 0)]
    msgs = vector_messages(ops, "memory.vectors")
    assert [(topic, key) for topic, key, _ in msgs] == [("memory.vectors", b"t/m1"), ("memory.vectors", b"t/m2")]
    assert orjson.loads(msgs[1][2] or b"") == {"tenant_id": "t", "id": "m2", "version": V2}
    table = MemoryVectorsTable()
    for (_, _, value), row in zip(msgs, warehouse_rows(ops), strict=True):
        staged, tenant, grouped = table.to_row(value or b"")
        assert staged == orjson.loads(value or b"") == orjson.loads(row.line) and tenant == "t" and not grouped


@pytest.mark.parametrize(
    "bad",
    [
        b"[]",
        b'{"tenant_id": "t", "version": "' + V1.encode() + b'"}',
        b'{"tenant_id": "t", "id": "m", "version": "12"}',
        b'{"tenant_id": "t", "id": "m", "version": "' + V1.encode() + b'", "vector": "AAA="}',
    ],
)
def test_a_row_that_is_not_a_vector_row_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        MemoryVectorsTable().to_row(bad)


def test_the_merge_lets_a_newer_version_or_a_reembedding_win() -> None:
    agent = MemoryVectorsTable().merge_sql("AI_MEMORY.MEMORY_VECTORS", "MEMORY_VECTORS_STAGE")
    assert "src.version > tgt.version" in agent and "src.model <> tgt.model" not in agent
    sql = MemoryVectorsTable(reembed=True).merge_sql("AI_MEMORY.MEMORY_VECTORS", "MEMORY_VECTORS_STAGE")
    assert "ON tgt.tenant_id = src.tenant_id AND tgt.id = src.id" in sql
    assert "src.version > tgt.version" in sql and "src.model <> tgt.model" in sql
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY" in sql
    assert "vector = src.vector" in sql and "loaded_at = SYSDATE()" in sql


def test_rebuild_reads_the_vectors_of_a_records_page_key_range() -> None:
    sql, params = vectors_sql("MEMORY_VECTORS", None, None, ("t", "m9"), MODEL, 64)
    assert "vector IS NOT NULL" in sql and "(tenant_id < ? OR (tenant_id = ? AND id <= ?))" in sql
    assert params == [MODEL, 64, "t", "t", "m9"]
    sql, params = vectors_sql("MEMORY_VECTORS", "t", ("t", "m1"), ("t", "m9"), MODEL, 64)
    assert "(tenant_id > ? OR (tenant_id = ? AND id > ?))" in sql
    assert params == [MODEL, 64, "t", "t", "m9", "t", "t", "t", "m1"]


def vrow(mid: str, version: str, vec: np.ndarray[Any, np.dtype[np.float32]], **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "tenant_id": "t",
        "id": mid,
        "version": int(version),  # NUMBER(38) comes back as a number
        "model": MODEL,
        "dims": 64,
        "vector": base64.b64encode(vec.astype("<f2").tobytes()).decode(),
    }
    d.update(over)
    return d


def test_rebuild_restores_only_the_restored_version_of_the_configured_model() -> None:
    vec = unit()
    recs = [record("ok"), record("newer", V2), record("other"), record("short"), record("garbled"), record("none")]
    rows = [
        vrow("ok", V1, vec),
        vrow("newer", V1, vec),  # the vector of an older version than the record restored
        vrow("other", V1, vec, model="wordllama-l2-128", dims=128),
        vrow("short", V1, vec[:32]),
        vrow("garbled", V1, vec, vector="not base64!"),
    ]
    ops = vector_ops(recs, rows, MODEL, 64, lambda rec: 123)
    assert [(op.memory_id, op.version, op.ttl_s) for op in ops] == [("ok", V1, 123)]
    version, meta, restored = vectors.decode(ops[0].value or b"")
    assert version == V1 and np.array_equal(restored, vec.astype("<f2"))
    # The filter fields come from the restored record.
    assert (meta.model, meta.dim, meta.type, meta.session_id, meta.agent_id, meta.visibility) == (
        MODEL,
        64,
        "event",
        "s9",
        "a9",
        "internal",
    )
    assert meta.occurred_ms == int(datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp() * 1000)


def test_the_configured_model_is_named_without_loading_it() -> None:
    assert model_name(Settings(_env_file=None)) == MODEL
    assert model_name(Settings(_env_file=None, embed_dim=128)) == "wordllama-l2-128"
    assert model_name(Settings(_env_file=None, embed_model="none")) is None


@pytest.mark.parametrize("n", [50, 5_000, 100_000])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_top_k_is_exact_whatever_the_threshold_guess(n: int, k: int) -> None:
    from app.gateway.vectors import _best

    rng = np.random.default_rng(n + k)
    for scores in (
        rng.standard_normal(n).astype(np.float32),
        np.sort(rng.standard_normal(n)).astype(np.float32),  # the best rows all at the end
        np.round(rng.standard_normal(n), 1).astype(np.float32),  # many ties
        np.full(n, -np.inf, dtype=np.float32),  # every row masked out
    ):
        got = _best(scores, min(k, n))
        best = np.sort(scores)[::-1][: min(k, n)]
        assert len(set(got.tolist())) == len(got) == min(k, n)
        assert scores[got].tolist() == best.tolist()  # the k best scores, best first
        ties = [(float(scores[a]), int(a)) for a in got]
        assert ties == sorted(ties, key=lambda t: (-t[0], t[1]))  # equal scores: lower index first


@pytest.mark.parametrize(
    ("text", "key", "context", "terms", "expected"),
    [
        ("My dog is called Biscuit", None, (), ("biscuit",), True),
        ("My dog is called Biscuit", None, (), ("puppy", "kind"), False),
        ("Deploy on Friday", "release", (), ("release",), True),  # the key is indexed too
        ("yes, let's do that", None, ("postgres",), ("postgres",), True),  # a context term
        ("Café au lait", None, (), ("cafe",), True),  # beyond ASCII: the tokenizer decides
    ],
)
def test_may_hold_never_misses_a_term_the_index_has(
    text: str, key: str | None, context: tuple[str, ...], terms: tuple[str, ...], expected: bool
) -> None:
    from app.gateway.docs import Doc
    from app.text import term_counts

    record: dict[str, Any] = {"content": {"text": text}, "key": key, "occurred_at": "2026-11-01T10:00:00+00:00"}
    doc = Doc("m", record, "hotset")
    doc.context_terms = context
    assert doc.may_hold(terms) is expected
    held = set(term_counts(f"{key or ''} {text}")) | set(context)
    assert not (set(terms) & held) or doc.may_hold(terms)  # never False for a term it holds
    _ = doc.term_counts  # computed: then answered from the counts themselves
    assert doc.may_hold(terms) is bool(set(terms) & held)


def test_the_embedding_agent_names_what_a_failed_write_depends_on() -> None:
    from confluent_kafka import KafkaException
    from redis.exceptions import ConnectionError as RedisConnectionError

    from agents.embed import EmbedHandler
    from app.kafka import BrokerUnavailable

    settings = Settings(_env_file=None)
    publishing = EmbedHandler(settings, None, None, None, producer=object())  # type: ignore[arg-type]
    assert publishing.dependencies == ("redis", "kafka")
    assert publishing.dependency(BrokerUnavailable("down")) == "kafka"
    assert publishing.dependency(KafkaException()) == "kafka"
    assert publishing.dependency(RedisConnectionError()) == "redis"
    assert publishing.dependency(ValueError("a bug")) is None  # the worker stops, never retries it
    quiet = EmbedHandler(settings.model_copy(update={"embed_warehouse": False}), None, None, None, object())  # type: ignore[arg-type]
    assert quiet.producer is None and quiet.dependencies == ("redis",)
