"""Search quality: recall@10 and MRR of keyword, contextual keyword, semantic and hybrid ranking
over a hand-written relevance set, in one run.

    python bench/recall.py [--quick] [--data DIR] [--dims N]

The set (bench/data/recall/): memories.jsonl holds multi-session agent/user dialog, one memory per
turn; queries.jsonl holds query -> expected memory pairs, each of a kind: "keyword" (shares words
with its memory), "paraphrase" (shares no content word with it, by the app's own tokenizer and
stopwords) or "context" (shares none with its memory but some with the turn before it, as a "yes,
let's do that" answers the question asked just before). `check_set` verifies those properties.

Modes, all over the whole set as one tenant:
- keyword: the gateway's BM25 (app.gateway.search.bm25 and idf) over each memory's own text;
- contextual keyword: the same over each memory's text together with the terms of the previous
  turn of its session that it lacks (app.text.contextual_terms, as the worker indexes turns);
- semantic: cosine over wordllama embeddings cut to `--dims` (skipped when wordllama is absent);
- hybrid: contextual keyword fused with semantic, by a min-max normalized weighted sum for a sweep
  of embedding weights and by reciprocal rank fusion;
- semantic_minilm and hybrid_minilm: the same with the optional MiniLM model (app.embed,
  `MEMSTREAM_EMBED_MODEL=minilm`), hybrid at the gateway's default embedding weight (skipped
  when its weights are not installed).
Ranking here is relevance alone: recency and importance are equal across a benchmark set.

`evaluate` takes ranked memory ids per mode and returns the metrics, for other benchmarks and
tests to reuse. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.gateway.docs import Doc
from app.gateway.search import bm25, query_terms
from app.settings import Settings
from app.text import contextual_terms, index_terms, tokens

DATA = Path(__file__).resolve().parent / "data" / "recall"
K = 10
KINDS = ("keyword", "paraphrase", "context")
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RRF_K = 60
MIN_QUERIES, MIN_SESSIONS = 300, 40


@dataclass(frozen=True)
class Memory:
    memory_id: str
    session_id: str
    turn: int
    role: str
    text: str


@dataclass(frozen=True)
class Query:
    query: str
    memory_id: str
    kind: str


def load(data: Path = DATA) -> tuple[list[Memory], list[Query]]:
    with (data / "memories.jsonl").open() as f:
        memories = [Memory(**json.loads(line)) for line in f if line.strip()]
    with (data / "queries.jsonl").open() as f:
        queries = [Query(**json.loads(line)) for line in f if line.strip()]
    return memories, queries


def previous_texts(memories: Sequence[Memory]) -> dict[str, str]:
    """Each memory's previous turn in its session ("" for a session's first turn)."""
    by_session: dict[str, list[Memory]] = {}
    for m in memories:
        by_session.setdefault(m.session_id, []).append(m)
    out: dict[str, str] = {}
    for turns in by_session.values():
        prev = ""
        for m in sorted(turns, key=lambda m: m.turn):
            out[m.memory_id] = prev
            prev = m.text
    return out


def check_set(memories: Sequence[Memory], queries: Sequence[Query]) -> list[str]:
    """Problems with the relevance set (empty when it holds): sizes, kinds, unique ids, and the
    word-overlap property of each query kind under the app's tokenizer."""
    problems: list[str] = []
    by_id = {m.memory_id: m for m in memories}
    if len(by_id) != len(memories):
        problems.append("duplicate memory ids")
    sessions = {m.session_id for m in memories}
    if len(sessions) < MIN_SESSIONS:
        problems.append(f"{len(sessions)} sessions, want at least {MIN_SESSIONS}")
    if len(queries) < MIN_QUERIES:
        problems.append(f"{len(queries)} queries, want at least {MIN_QUERIES}")
    prev = previous_texts(memories)
    disjoint = 0
    for q in queries:
        m = by_id.get(q.memory_id)
        if m is None:
            problems.append(f"{q.query!r}: unknown memory {q.memory_id}")
            continue
        if q.kind not in KINDS:
            problems.append(f"{q.query!r}: unknown kind {q.kind}")
        shared = set(tokens(q.query)) & set(tokens(m.text))
        disjoint += not shared
        if q.kind in ("paraphrase", "context") and shared:
            problems.append(f"{q.query!r} ({q.kind}) shares {sorted(shared)} with {q.memory_id}")
        if q.kind == "context" and not set(tokens(q.query)) & set(tokens(prev[q.memory_id])):
            problems.append(f"{q.query!r} (context) shares nothing with the turn before {q.memory_id}")
    if disjoint * 2 < len(queries):
        problems.append(f"{disjoint} of {len(queries)} queries share no content word with their memory")
    counts = Counter(q.kind for q in queries)
    if not counts["context"]:
        problems.append("no context queries")
    return problems


@dataclass(frozen=True)
class Metrics:
    n: int
    recall_at_k: float
    mrr: float


def evaluate(ranked: Mapping[str, Sequence[Sequence[str]]], expected: Sequence[str], k: int = K) -> dict[str, Metrics]:
    """recall@k and MRR (reciprocal rank of the expected memory, 0 beyond k) per mode; each mode
    maps to one ranked list of memory ids per query, in the order of `expected`."""
    out: dict[str, Metrics] = {}
    for mode, lists in ranked.items():
        if len(lists) != len(expected):
            raise ValueError(f"{mode}: {len(lists)} ranked lists for {len(expected)} queries")
        hits, rr = 0, 0.0
        for ids, want in zip(lists, expected, strict=True):
            top = list(ids[:k])
            if want in top:
                hits += 1
                rr += 1.0 / (top.index(want) + 1)
        n = len(expected)
        out[mode] = Metrics(n, round(hits / n, 4) if n else 0.0, round(rr / n, 4) if n else 0.0)
    return out


Scores = dict[str, float]


class KeywordIndex:
    """Postings from `index_terms` (as the hotset holds them) and BM25 from the gateway."""

    def __init__(self, texts: Mapping[str, str]):
        self.docs = {
            mid: Doc(mid, {"type": "conversation", "content": {"text": t}, "occurred_at": "2026-01-01T00:00:00+00:00"})
            for mid, t in texts.items()
        }
        self.postings: dict[str, list[str]] = {}
        for mid, t in texts.items():
            for term in index_terms(t):
                self.postings.setdefault(term, []).append(mid)
        self.df = {t: len(ids) for t, ids in self.postings.items()}

    def scores(self, q: str) -> Scores:
        terms = query_terms(q)
        pool = {mid for t in terms for mid in self.postings.get(t, ())}
        n = len(self.docs)
        out = {mid: bm25(terms, self.docs[mid], self.df, n) for mid in pool}
        return {mid: s for mid, s in out.items() if s > 0}


def top(scores: Scores, k: int) -> list[str]:
    return [mid for mid, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def minmax(scores: Scores) -> Scores:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {mid: (s - lo) / span if span > 0 else 1.0 for mid, s in scores.items()}


def weighted(lexical: Scores, dense: Scores, w: float, reads: int | None = None) -> Scores:
    """Min-max normalized weighted sum over the union of both candidate lists; a memory absent
    from one list scores 0 there. `reads`: as the gateway's hybrid search, only the best `reads`
    dense candidates join the union (those with a lexical score are in it anyway); every dense
    candidate still counts in the normalization."""
    a, b = minmax(lexical), minmax(dense)
    joined = b.keys() if reads is None else set(top(dense, reads))
    return {mid: (1 - w) * a.get(mid, 0.0) + w * b.get(mid, 0.0) for mid in a.keys() | joined}


def rrf(lexical: Scores, dense: Scores, k: int = RRF_K) -> Scores:
    out: Scores = {}
    for scores in (lexical, dense):
        for rank, mid in enumerate(top(scores, len(scores)), start=1):
            out[mid] = out.get(mid, 0.0) + 1.0 / (k + rank)
    return out


def embedder(dims: int) -> Callable[[list[str]], Any] | None:
    """wordllama's static embeddings cut to `dims`, L2-normalized; None when not installed."""
    try:
        import numpy as np
        import wordllama
    except ImportError:
        return None
    model = wordllama.WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)

    def embed(texts: list[str]) -> Any:
        v = np.asarray(model.embed(texts), dtype=np.float32)[:, :dims]
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    return embed


def minilm_embedder() -> Callable[[list[str]], Any] | None:
    """The optional MiniLM model as the worker runs it (app.embed); None when its weights are not
    installed."""
    try:
        from app.embed import MiniLMEmbedder

        return MiniLMEmbedder().embed
    except RuntimeError:
        return None


def dense_scores(
    embed: Callable[[list[str]], Any], own: Mapping[str, str], queries: Sequence[Query], pool: int
) -> list[Scores]:
    """Per query, the cosine of its `pool` nearest memories."""
    ids = list(own)
    sims = embed([q.query for q in queries]) @ embed([own[mid] for mid in ids]).T
    return [{ids[j]: float(row[j]) for j in row.argsort()[::-1][:pool]} for row in sims]


def run(
    memories: Sequence[Memory],
    queries: Sequence[Query],
    dims: int,
    pool: int,
    weights: Sequence[float],
    reads: int | None = None,
) -> dict[str, Any]:
    own = {m.memory_id: m.text for m in memories}
    prev = previous_texts(memories)
    # as the worker indexes a conversation turn: its own terms, then the previous turn's it lacks
    ctx = {mid: " ".join([t, *contextual_terms(index_terms(t), prev[mid])]) for mid, t in own.items()}
    t0 = time.perf_counter()
    plain, contextual = KeywordIndex(own), KeywordIndex(ctx)
    lex = [plain.scores(q.query) for q in queries]
    clex = [contextual.scores(q.query) for q in queries]
    ranked: dict[str, list[list[str]]] = {
        "keyword": [top(s, K) for s in lex],
        "contextual_keyword": [top(s, K) for s in clex],
    }
    timings = {"keyword_s": round(time.perf_counter() - t0, 3)}
    embed = embedder(dims)
    if embed is not None:
        t0 = time.perf_counter()
        dense = dense_scores(embed, own, queries, pool)
        ranked["semantic"] = [top(s, K) for s in dense]
        for w in weights:
            ranked[f"hybrid_sum_w{w:.1f}"] = [
                top(weighted(c, d, w, reads), K) for c, d in zip(clex, dense, strict=True)
            ]
        ranked["hybrid_rrf"] = [top(rrf(c, d), K) for c, d in zip(clex, dense, strict=True)]
        timings["semantic_s"] = round(time.perf_counter() - t0, 3)
    minilm = minilm_embedder()
    if minilm is not None:  # the optional model (MEMSTREAM_EMBED_MODEL=minilm), at the gateway's default weight
        t0 = time.perf_counter()
        dense = dense_scores(minilm, own, queries, pool)
        ranked["semantic_minilm"] = [top(s, K) for s in dense]
        w = Settings(_env_file=None).search_vector_weight
        ranked[f"hybrid_minilm_w{w:.1f}"] = [top(weighted(c, d, w), K) for c, d in zip(clex, dense, strict=True)]
        timings["minilm_s"] = round(time.perf_counter() - t0, 3)
    expected = [q.memory_id for q in queries]
    overall = evaluate(ranked, expected)
    by_kind = {
        kind: evaluate(
            {
                mode: [r for r, q in zip(lists, queries, strict=True) if q.kind == kind]
                for mode, lists in ranked.items()
            },
            [q.memory_id for q in queries if q.kind == kind],
        )
        for kind in KINDS
    }
    return {"overall": overall, "by_kind": by_kind, "timings": timings, "semantic": embed is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer fusion weights")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--dims", type=int, default=64, help="embedding dimensions kept (wordllama: up to 256)")
    ap.add_argument("--pool", type=int, default=50, help="dense candidates per query fed to fusion")
    ap.add_argument(
        "--reads", type=int, default=None, help="of those, how many join the weighted fusion (default: all)"
    )
    args = ap.parse_args()
    memories, queries = load(args.data)
    problems = check_set(memories, queries)
    if problems:
        raise SystemExit("relevance set: " + "; ".join(problems[:5]))
    weights = (0.3, 0.4, 0.5) if args.quick else WEIGHTS
    res = run(memories, queries, args.dims, args.pool, weights, args.reads)
    kinds = Counter(q.kind for q in queries)
    print(
        f"{len(memories)} memories, {len({m.session_id for m in memories})} sessions, {len(queries)} queries "
        f"({', '.join(f'{k} {kinds[k]}' for k in KINDS)}); k={K}"
    )
    if not res["semantic"]:
        print("wordllama not installed: semantic and hybrid modes skipped")
    head = f"{'mode':<22}{'recall@10':>10}{'MRR':>8}" + "".join(f"{k[:5] + ' R@10':>13}" for k in KINDS)
    print(head)
    print("-" * len(head))
    for mode, m in res["overall"].items():
        per = "".join(f"{res['by_kind'][k][mode].recall_at_k:>13.3f}" for k in KINDS)
        print(f"{mode:<22}{m.recall_at_k:>10.3f}{m.mrr:>8.3f}{per}")
    summary = {
        "bench": "recall",
        "queries": len(queries),
        "memories": len(memories),
        "dims": args.dims if res["semantic"] else None,
        "pool": args.pool,
        "reads": args.reads,
        "modes": {mode: {"recall_at_10": m.recall_at_k, "mrr": m.mrr} for mode, m in res["overall"].items()},
        "by_kind": {
            k: {mode: {"recall_at_10": m.recall_at_k, "mrr": m.mrr} for mode, m in v.items()}
            for k, v in res["by_kind"].items()
        },
        "timings": res["timings"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
