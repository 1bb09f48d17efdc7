"""The relevance set of bench/recall.py holds the properties the benchmark relies on."""

from __future__ import annotations

from collections import Counter

from app.text import tokens
from bench.recall import KINDS, Memory, Query, check_set, evaluate, load, previous_texts


def test_relevance_set_counts_and_overlap() -> None:
    memories, queries = load()
    assert check_set(memories, queries) == []
    assert len(queries) >= 300
    assert len({m.session_id for m in memories}) >= 40
    kinds = Counter(q.kind for q in queries)
    assert set(kinds) <= set(KINDS)
    text = {m.memory_id: m.text for m in memories}
    disjoint = [q for q in queries if not set(tokens(q.query)) & set(tokens(text[q.memory_id]))]
    assert len(disjoint) * 2 >= len(queries)
    assert kinds["context"] >= 10


def test_checker_reports_a_shared_word_and_a_context_query_without_its_turn() -> None:
    memories = [
        Memory("s-t1", "s", 1, "user", "Shall we move the launch to Friday?"),
        Memory("s-t2", "s", 2, "agent", "Yes, let's do that."),
    ]
    queries = [
        Query("launch moved friday", "s-t1", "paraphrase"),  # shares launch, friday
        Query("postgres ledger", "s-t2", "context"),  # shares nothing with the turn before
        Query("launch friday", "s-t2", "context"),
    ]
    problems = check_set(memories, queries)
    assert any("'launch moved friday' (paraphrase) shares" in p for p in problems)
    assert any("'postgres ledger' (context) shares nothing" in p for p in problems)
    assert not any("'launch friday'" in p for p in problems)
    assert any("queries, want at least" in p for p in problems)
    assert previous_texts(memories) == {"s-t1": "", "s-t2": "Shall we move the launch to Friday?"}


def test_evaluate_recall_and_mrr() -> None:
    ranked = {"a": [["x", "y"], ["q", "r", "z"]], "b": [["y"], ["w"]]}
    m = evaluate(ranked, ["y", "z"], k=10)
    assert (m["a"].recall_at_k, m["a"].mrr) == (1.0, round((1 / 2 + 1 / 3) / 2, 4))
    assert (m["b"].recall_at_k, m["b"].mrr) == (0.5, 0.5)
    assert evaluate({"c": [["a", "b", "y"]]}, ["y"], k=2)["c"].recall_at_k == 0.0
