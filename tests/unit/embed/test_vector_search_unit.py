"""Pure parts of search by meaning: the vector value layout, the embedding plan, the in-memory
exact search with its filters, and hybrid fusion. The real default model, no services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from agents.embed import embed_text, plan
from app.embed import WordLlamaEmbedder
from app.gateway.docs import Doc
from app.gateway.search import SearchParams, fuse, query_terms
from app.gateway.vectors import TenantVectors
from sinks.hotset import vectors

V1 = "0" * 31 + "1"


@pytest.fixture(scope="module")
def model() -> WordLlamaEmbedder:
    return WordLlamaEmbedder(64)


def record(mid: str, text: str | None, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "tenant_id": "t",
        "memory_id": mid,
        "version": V1,
        "type": "event",
        "content": {"text": text} if text is not None else None,
        "visibility": "public",
        "session_id": "s1",
        "agent_id": "a1",
        "occurred_at": "2026-11-01T10:00:00Z",
        "deleted_at": None,
    }
    rec.update(over)
    return rec


def test_the_vector_layout_round_trips_and_refuses_other_values() -> None:
    meta = vectors.VectorMeta("wordllama-l2-64", 4, "event", "s", None, "public", 5)
    value = vectors.encode(V1, meta, np.array([0.5, -0.5, 0.5, -0.5], dtype=np.float32))
    version, back, vec = vectors.decode(value)
    assert (version, back) == (V1, meta)
    assert vec.tolist() == [0.5, -0.5, 0.5, -0.5]
    with pytest.raises(ValueError):
        vectors.decode(b"not a vector")
    with pytest.raises(ValueError):
        vectors.encode(V1, meta, np.zeros(3, dtype=np.float32))


def test_the_model_gives_unit_vectors_and_a_paraphrase_is_nearer(model: WordLlamaEmbedder) -> None:
    m = model.embed(["My dog is a golden retriever", "what kind of puppy do I have", "the invoice is overdue", ""])
    assert m.shape == (4, 64) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m[:3], axis=1), 1.0, atol=1e-5)
    assert not m[3].any()  # an empty text embeds to zero: it matches nothing
    assert m[0] @ m[1] > m[2] @ m[1]


def test_plan_embeds_live_records_and_drops_deleted_ones(model: WordLlamaEmbedder) -> None:
    ops = plan(
        [
            record("m1", "hello there", key="greeting"),
            record("m2", None, deleted_at="2026-11-02T00:00:00Z"),
            record("m3", "   "),
        ],
        model,
        lambda rec: 60,
    )
    assert [(op.memory_id, op.value is not None) for op in ops] == [("m2", False), ("m1", True)]
    assert embed_text(record("m1", "hello there", key="greeting")) == "greeting hello there"
    _, meta, _ = vectors.decode(ops[1].value or b"")
    assert (meta.model, meta.dim, meta.visibility, meta.session_id) == ("wordllama-l2-64", 64, "public", "s1")


def tenant_vectors(model: WordLlamaEmbedder, rows: list[dict[str, Any]]) -> TenantVectors:
    tv = TenantVectors(model.name, model.dim)
    for op in plan(rows, model, lambda rec: 60):
        assert op.value is not None
        tv.upsert(op.memory_id, op.value)
    return tv


def test_exact_search_honours_every_static_filter(model: WordLlamaEmbedder) -> None:
    rows = [record(f"f{i}", f"filler message number {i} about the weather") for i in range(300)]
    rows += [
        record("dog-private", "My dog is a golden retriever", visibility="private", session_id="s2"),
        record("dog-public", "My dog is a golden retriever named Biscuit"),
        record("dog-rule", "Dogs are welcome in the office", type="rule", agent_id="a2"),
    ]
    tv = tenant_vectors(model, rows)
    q = model.embed(["what kind of puppy do I have"])[0]
    hits, scanned = tv.top(q, 5)
    assert scanned == 303 and hits[0][0] in {"dog-private", "dog-public"}
    public, scanned = tv.top(q, 500, channel_visibility="public")
    assert "dog-private" not in dict(public) and scanned == 302
    assert [m for m, _ in tv.top(q, 5, session_id="s2")[0]] == ["dog-private"]
    assert [m for m, _ in tv.top(q, 5, type="rule")[0]] == ["dog-rule"]
    assert [m for m, _ in tv.top(q, 5, agent_id="a2")[0]] == ["dog-rule"]
    # A vector of another model or dimension is never compared.
    tv.upsert(
        "other",
        vectors.encode(V1, vectors.VectorMeta("other-model", 64, "event", "s3", None, "public", 0), q),
    )
    assert tv.top(q, 5, session_id="s3") == ([], 0)
    # Re-embedding a memory replaces its row.
    tv.upsert("other", vectors.encode(V1, vectors.VectorMeta(model.name, 64, "event", "s3", None, "public", 0), q))
    assert [m for m, _ in tv.top(q, 5, session_id="s3")[0]] == ["other"]
    assert tv.rows == 304


def test_unfiltered_search_leaves_out_rows_of_another_model_and_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    tv = TenantVectors("m", 8)
    vecs = rng.standard_normal((200, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs.astype(np.float16).astype(np.float32)  # what the float16 layout keeps
    for i, v in enumerate(vecs):
        meta = vectors.VectorMeta("m", 8, "event", f"s{i % 3}" if i % 5 else None, f"a{i % 2}", "public", 0)
        tv.upsert(f"m{i}", vectors.encode(V1, meta, v))
    q = vecs[7]

    def brute(rows: list[int], k: int) -> list[str]:
        scores = vecs[rows] @ q
        return [f"m{rows[j]}" for j in sorted(range(len(rows)), key=lambda j: (-scores[j], rows[j]))[:k]]

    everything = list(range(200))
    hits, scanned = tv.top(q, 10)
    assert [m for m, _ in hits] == brute(everything, 10) and scanned == 200
    # m7 (the query itself) re-embedded by another model: no longer compared, until it is back.
    tv.upsert("m7", vectors.encode(V1, vectors.VectorMeta("other", 8, "event", "s1", "a1", "public", 0), q))
    hits, scanned = tv.top(q, 10)
    assert [m for m, _ in hits] == brute([i for i in everything if i != 7], 10) and scanned == 199
    tv.upsert("m7", vectors.encode(V1, vectors.VectorMeta("m", 8, "event", "s1", "a1", "public", 0), q))
    assert tv.top(q, 10)[0][0][0] == "m7" and tv.unusable == 0
    # Filters on the coded columns, a None field included, and a value no row holds.
    in_s1 = [i for i in everything if i % 5 and i % 3 == 1]
    assert [m for m, _ in tv.top(q, 10, session_id="s1")[0]] == brute(in_s1, 10)
    both = [i for i in in_s1 if i % 2 == 0]
    assert [m for m, _ in tv.top(q, 10, session_id="s1", agent_id="a0")[0]] == brute(both, 10)
    assert tv.top(q, 10, session_id="nowhere") == ([], 0)
    assert tv.top(q, 10, type="rule") == ([], 0)


def doc(mid: str, text: str, **over: Any) -> Doc:
    rec = record(mid, text, **over)
    rec["occurred_at"] = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    return Doc(mid, rec)


def test_fusion_normalizes_each_mode_and_lets_either_find_a_memory() -> None:
    docs = [doc("kw", "golden retriever puppy"), doc("vec", "my dog Biscuit"), doc("both", "puppy Biscuit")]
    p = SearchParams(terms=query_terms("puppy"), limit=10, text="puppy")
    df, n, now = {"puppy": 2}, 100, datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000
    cosine = {"vec": 0.9, "both": 0.5}
    hybrid = fuse(docs, p, df, n, now, cosine, 0.4)
    assert {s.doc.memory_id for s in hybrid} == {"kw", "vec", "both"}
    assert all(0.0 <= s.relevance <= 1.0 for s in hybrid)
    semantic = fuse(docs, p, df, n, now, cosine, 0.4, keyword=False)
    assert [s.doc.memory_id for s in semantic] == ["vec", "both"]  # no vector: not a semantic hit
    assert semantic[0].relevance == 0.9
    # Only vectors: the vector score takes the whole weight.
    alone = fuse([docs[1]], SearchParams(terms=(), text="x"), {}, 1, now, {"vec": 0.3}, 0.4)
    assert alone[0].relevance == 1.0
    # Filters apply to fused candidates as to keyword ones.
    private = fuse(
        [doc("p", "puppy", visibility="private")],
        SearchParams(terms=("puppy",), channel_visibility="public"),
        df,
        n,
        now,
        {"p": 0.9},
        0.4,
    )
    assert private == []


def test_unread_vector_candidates_only_widen_the_cosine_range() -> None:
    docs = [doc("kw", "golden retriever puppy"), doc("vec", "my dog Biscuit"), doc("both", "puppy Biscuit")]
    p = SearchParams(terms=query_terms("puppy"), limit=10, text="puppy")
    df, n, now = {"puppy": 2}, 100, datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000
    cosine = {"vec": 0.9, "both": 0.7, "far": 0.5}
    read_all = fuse([*docs, doc("far", "a cat on a mat")], p, df, n, now, cosine, 0.4)
    unread = fuse(docs, p, df, n, now, cosine, 0.4, unread=["far"])
    assert "far" in {s.doc.memory_id for s in read_all}
    assert "far" not in {s.doc.memory_id for s in unread}
    # The others score as when it was read: its cosine still sets the bottom of the range.
    assert [(s.doc.memory_id, s.score) for s in unread] == [
        (s.doc.memory_id, s.score) for s in read_all if s.doc.memory_id != "far"
    ]
    without = fuse(docs, p, df, n, now, {"vec": 0.9, "both": 0.7}, 0.4)
    assert {s.doc.memory_id: s.relevance for s in without}["both"] < {s.doc.memory_id: s.relevance for s in unread}[
        "both"
    ]
    # No read candidate with a vector: the unread ones give the vectors no weight.
    only_kw = fuse([docs[0]], p, df, n, now, cosine, 0.4, unread=["vec", "both", "far"])
    assert [s.relevance for s in only_kw] == [1.0]
