"""Search ranking as pure functions: BM25 term relevance combined with recency and importance.

Two stages keep a search over a large hotset bounded:
1. The candidate pool (MEMSTREAM_SEARCH_CANDIDATE_POOL): first every memory holding all the
   query terms when there are no more than the pool (the intersection of their postings), then
   each term's newest postings, the rarest term first. `prescore` ranks the pool from the postings
   alone (which query terms a memory holds, weighted by IDF, plus recency from the posting
   score), with no record fetched. It runs inside Redis (Lua.SEARCH_CANDIDATES mirrors `idf` and
   `prescore`): moving thousands of postings into Python costs more than scoring them.
2. `rank` scores the best of them fully: BM25 with real term frequencies and document length,
   then `score = 0.7 * relevance + 0.2 * recency + 0.1 * importance`.

Semantic and hybrid modes (`fuse`): vector candidates (cosine over the tenant's vectors,
app/gateway/vectors.py) join the keyword ones; each mode's scores are min-max normalized over its
own candidates and summed with weights (`search_vector_weight` for the vectors), which replaces
BM25's relevance in the same final score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from app.auth.scope import may_read
from app.gateway.docs import Doc, Slot, from_record
from app.gateway.visibility import allowed
from app.models import MemoryRecord, Visibility
from app.text import tokens
from sinks.hotset import ActiveEntry

MAX_QUERY_TERMS = 16
K1 = 1.2
B = 0.75
AVG_DOC_TERMS = 24.0  # typical indexed terms per memory; the hotset keeps no corpus statistics
RECENCY_HALF_LIFE_S = 7 * 86400
DEFAULT_IMPORTANCE = 0.5
W_RELEVANCE, W_RECENCY, W_IMPORTANCE = 0.7, 0.2, 0.1
Mode = Literal["keyword", "semantic", "hybrid"]


@dataclass(frozen=True)
class SearchParams:
    terms: tuple[str, ...]
    type: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    channel_visibility: Visibility | None = None
    include_superseded: bool = False
    limit: int = 10
    reader_agent: str | None = None  # an agent-scoped caller: app.auth.scope.may_read filters
    text: str = ""  # the query as written (embedded for semantic search)


class Scored(NamedTuple):  # a tuple: one per scored candidate of every search
    doc: Doc
    score: float
    relevance: float
    recency: float
    importance: float


def query_terms(q: str) -> tuple[str, ...]:
    """The query through the indexing tokenizer (app.text), distinct, in order, capped."""
    seen: dict[str, None] = {}
    for t in tokens(q):
        seen.setdefault(t, None)
    return tuple(seen)[:MAX_QUERY_TERMS]


def idf(df: int, n_docs: int) -> float:
    """BM25's IDF, floored at a small positive value so common terms still count a little."""
    n = max(n_docs, df, 1)
    return max(0.01, math.log(1 + (n - df + 0.5) / (df + 0.5)))


def recency(occurred_ms: float, now_ms: float) -> float:
    age_s = max(0.0, (now_ms - occurred_ms) / 1000)
    return float(0.5 ** (age_s / RECENCY_HALF_LIFE_S))


def prescore(matched: Iterable[str], occurred_ms: float, df: Mapping[str, int], n_docs: int, now_ms: float) -> float:
    """Stage 1: BM25 with tf=1 and average length (sum of IDFs), nudged by recency."""
    rel = sum(idf(df.get(t, 0), n_docs) for t in matched)
    return rel * (1.0 + 0.25 * recency(occurred_ms, now_ms))


def bm25(terms: Sequence[str], doc: Doc, df: Mapping[str, int], n_docs: int) -> float:
    return _bm25(_idfs(terms, df, n_docs), doc)


def _idfs(terms: Sequence[str], df: Mapping[str, int], n_docs: int) -> list[tuple[str, float]]:
    """Each query term with its IDF: computed once per search, not once per candidate."""
    return [(t, idf(df.get(t, 0), n_docs)) for t in terms]


def _bm25(weights: Sequence[tuple[str, float]], doc: Doc) -> float:
    counts = doc.term_counts
    norm = K1 * (1 - B + B * doc.length / AVG_DOC_TERMS)
    total = 0.0
    for t, w in weights:
        tf = counts.get(t, 0)
        if tf:
            total += w * tf * (K1 + 1) / (tf + norm)
    return total


def passes(doc: Doc, p: SearchParams) -> bool:
    """Filters: type, session, agent, visibility, superseded. Deleted records never pass."""
    if doc.deleted:
        return False
    if p.type is not None and doc.type != p.type:
        return False
    if p.session_id is not None and doc.session_id != p.session_id:
        return False
    if p.agent_id is not None and doc.agent_id != p.agent_id:
        return False
    if doc.visibility not in allowed(p.channel_visibility):
        return False
    if p.reader_agent is not None and not may_read(p.reader_agent, doc.agent_id, doc.type, doc.to_agent):
        return False
    return p.include_superseded or doc.superseded_by is None


def _parts(
    doc: Doc, p: SearchParams, weights: Sequence[tuple[str, float]], now_ms: float
) -> tuple[float, float, float] | None:
    raw = _bm25(weights, doc)
    if raw <= 0:
        return None  # no query term in the memory (e.g. a warehouse ILIKE substring hit)
    rel = raw / (raw + 2.0)  # saturating: comparable across hotset and warehouse candidates
    imp = doc.importance if doc.importance is not None else DEFAULT_IMPORTANCE
    return rel, recency(doc.occurred_ms, now_ms), imp


def _total(rel: float, rec: float, imp: float) -> float:
    return round(W_RELEVANCE * rel + W_RECENCY * rec + W_IMPORTANCE * imp, 6)


def score(doc: Doc, p: SearchParams, df: Mapping[str, int], n_docs: int, now_ms: float) -> Scored | None:
    parts = _parts(doc, p, _idfs(p.terms, df, n_docs), now_ms)
    if parts is None:
        return None
    rel, rec, imp = parts
    return Scored(doc, _total(rel, rec, imp), round(rel, 6), round(rec, 6), round(imp, 6))


def rank(docs: Iterable[Doc], p: SearchParams, df: Mapping[str, int], n_docs: int, now_ms: float) -> list[Scored]:
    """Filter, score and order (score, then memory id); the first occurrence of a memory id wins
    (hotset before warehouse). Only the returned few are built as `Scored`."""
    scored: list[tuple[float, str, Doc, tuple[float, float, float]]] = []
    seen: set[str] = set()
    weights = _idfs(p.terms, df, n_docs)
    for doc in docs:
        if doc.memory_id in seen or not passes(doc, p):
            continue
        seen.add(doc.memory_id)
        parts = _parts(doc, p, weights, now_ms)
        if parts is not None:
            scored.append((-_total(*parts), doc.memory_id, doc, parts))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [
        Scored(doc, -neg, round(rel, 6), round(rec, 6), round(imp, 6))
        for neg, _, doc, (rel, rec, imp) in scored[: p.limit]
    ]


def _minmax(values: Mapping[str, float]) -> dict[str, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi <= lo:
        return dict.fromkeys(values, 1.0)
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


def fuse(
    docs: Iterable[Doc],
    p: SearchParams,
    df: Mapping[str, int],
    n_docs: int,
    now_ms: float,
    cosine: Mapping[str, float],
    vector_weight: float,
    *,
    keyword: bool = True,
    unread: Iterable[str] = (),
) -> list[Scored]:
    """Semantic (`keyword=False`: relevance is the cosine) or hybrid ranking: relevance is the
    weighted sum of the min-max normalized BM25 and cosine scores of the candidates (a mode with
    no candidate leaves its weight to the other), then recency and importance as in `rank`.
    `unread`: vector candidates (ids in `cosine`) whose records were not read: never ranked, their
    cosines still count in the range the others are normalized over."""
    kept: dict[str, Doc] = {}
    kw: dict[str, float] = {}
    weights = _idfs(p.terms, df, n_docs) if keyword else []
    for doc in docs:
        if doc.memory_id in kept or not passes(doc, p):
            continue
        raw = _bm25(weights, doc) if weights and doc.may_hold(p.terms) else 0.0
        if raw <= 0 and doc.memory_id not in cosine:
            continue
        kept[doc.memory_id] = doc
        if raw > 0:
            kw[doc.memory_id] = raw
    cos = {mid: c for mid, c in cosine.items() if mid in kept}
    if keyword:
        kn = _minmax(kw)
        cn = _minmax(cos | {mid: cosine[mid] for mid in unread}) if cos else {}
        w_vec = vector_weight if kn and cn else (1.0 if cn else 0.0)
        rel_of = {mid: (1 - w_vec) * kn.get(mid, 0.0) + w_vec * cn.get(mid, 0.0) for mid in kept}
    else:
        rel_of = {mid: max(0.0, cos.get(mid, 0.0)) for mid in kept}
    scored: list[tuple[float, str, Doc, tuple[float, float, float]]] = []
    for mid, doc in kept.items():
        imp = doc.importance if doc.importance is not None else DEFAULT_IMPORTANCE
        parts = (rel_of[mid], recency(doc.occurred_ms, now_ms), imp)
        scored.append((-_total(*parts), mid, doc, parts))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [
        Scored(doc, -neg, round(rel, 6), round(rec, 6), round(imp, 6))
        for neg, _, doc, (rel, rec, imp) in scored[: p.limit]
    ]


def reconcile(
    records: Sequence[MemoryRecord], hot: Sequence[Slot], active: Sequence[ActiveEntry | None]
) -> dict[str, Doc | None]:
    """The copy of each warehouse hit's memory that a search may rank: the newer of the hotset's
    and the warehouse's (None: the newer one is a tombstone). The warehouse lags the hotset by a
    flush, so an older copy there must not outrank what the hotset knows, deletes included.

    `hot` and `active` line up with `records`: the hotset's slot of the same memory id and the
    memory active for the record's (type, key), when it has one.
    """
    out: dict[str, Doc | None] = {}
    for rec, slot, act in zip(records, hot, active, strict=True):
        if slot.version is not None and slot.version >= rec.version:
            out[rec.memory_id] = slot.doc
            continue
        if rec.superseded_by is None and act and act.memory_id != rec.memory_id and act.version > rec.version:
            rec = rec.model_copy(update={"superseded_by": act.memory_id})  # a newer memory holds the key
        out[rec.memory_id] = from_record(rec)
    return out
