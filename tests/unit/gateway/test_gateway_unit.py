"""Pure gateway functions without services: visibility, ranking, context assembly, row mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.gateway import context, search, visibility
from app.gateway.docs import ABSENT, Doc, Slot, from_hotset
from app.gateway.schemas import Limit100, QueryBool
from app.gateway.warehouse import search_sql
from app.text import tokens
from sinks.hotset import ActiveEntry, StoredMemory
from sinks.warehouse import row_to_record

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def doc(mid: str, text: str, **rec: Any) -> Doc:
    record: dict[str, Any] = {
        "memory_id": mid,
        "type": "event",
        "content": {"text": text},
        "visibility": "private",
        "occurred_at": NOW.isoformat(),
        "deleted_at": None,
        "superseded_by": None,
    }
    if "status" in rec:
        record["content"]["status"] = rec.pop("status")
    record.update(rec)
    return Doc(mid, record)


def test_visibility_rules() -> None:
    assert visibility.allowed("public") == {"public"}
    assert visibility.allowed("internal") == {"public", "internal"}
    assert visibility.allowed(None) == visibility.allowed("private") == {"public", "internal", "private"}
    assert not visibility.visible("private", "public") and not visibility.visible("internal", "public")


def test_query_terms_use_the_index_tokenizer() -> None:
    assert search.query_terms("The Kafka, kafka and REDIS!") == ("kafka", "redis")
    assert search.query_terms("the and of") == ()


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Café naïve résumé Straße", ["café", "naïve", "résumé", "straße"]),
        ("Cafe\u0301 \uff4b\uff41\uff46\uff4b\uff41", ["café", "kafka"]),  # NFKC: composed accents, full-width letters
        ("Привет, мир", ["привет", "мир"]),
        ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),  # vowel signs stay inside the word
        ("日本語テキスト", ["日本", "本語", "語テ", "テキ", "キス", "スト"]),
        ("猫 and kafka", ["猫", "kafka"]),
        ("emoji🦄party the end", ["emoji", "party", "end"]),
    ],
)
def test_tokens_of_any_script(text: str, terms: list[str]) -> None:
    assert tokens(text) == terms


def test_a_cjk_query_finds_a_word_inside_a_longer_run() -> None:
    doc_terms = set(tokens("会議は日本語テキストで行います"))
    assert set(search.query_terms("日本語")) <= doc_terms


def test_idf_prefers_rare_terms() -> None:
    assert search.idf(1, 1000) > search.idf(500, 1000) > 0


def test_rank_combines_relevance_recency_importance_and_filters() -> None:
    p = search.SearchParams(terms=("kafka",), limit=10)
    df, n = {"kafka": 3}, 100
    now_ms = NOW.timestamp() * 1000
    docs = [
        doc("dense", "kafka kafka kafka"),
        doc("once", "one mention of kafka among many other words in a long text"),
        doc("old", "kafka kafka kafka", occurred_at=(NOW - timedelta(days=60)).isoformat()),
        doc("none", "nothing here"),
        doc("gone", "kafka", deleted_at=NOW.isoformat()),
        doc("super", "kafka", superseded_by="x"),
        doc("dense", "duplicate id from the warehouse"),
    ]
    ranked = search.rank(docs, p, df, n, now_ms)
    assert [s.doc.memory_id for s in ranked] == ["dense", "once", "old"]
    assert ranked[0].relevance > ranked[1].relevance and ranked[0].recency > ranked[2].recency
    with_super = search.rank(docs, search.SearchParams(terms=("kafka",), include_superseded=True), df, n, now_ms)
    assert "super" in {s.doc.memory_id for s in with_super}
    important = search.rank([doc("a", "kafka", importance=1.0), doc("b", "kafka", importance=0.0)], p, df, n, now_ms)
    assert [s.doc.memory_id for s in important] == ["a", "b"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"channel_visibility": "public"}, {"pub"}),
        ({"channel_visibility": "internal"}, {"pub", "int"}),
        ({"type": "decision"}, {"int"}),
        ({"session_id": "s2"}, {"priv"}),
        ({"agent_id": "a1"}, {"pub"}),
    ],
)
def test_search_filters(params: dict[str, Any], expected: set[str]) -> None:
    docs = [
        doc("pub", "kafka", visibility="public", agent_id="a1", session_id="s1"),
        doc("int", "kafka", visibility="internal", type="decision", session_id="s1"),
        doc("priv", "kafka", session_id="s2"),
    ]
    p = search.SearchParams(terms=("kafka",), **params)
    assert {s.doc.memory_id for s in search.rank(docs, p, {"kafka": 3}, 3, NOW.timestamp() * 1000)} == expected


def test_from_hotset_applies_superseded_by_and_hides_tombstones() -> None:
    V = "0" * 32
    j = '{"memory_id": "m", "occurred_at": "2026-01-01T00:00:00Z", "superseded_by": null}'
    d = from_hotset("m", StoredMemory(V, False, j, "newer"))
    assert d is not None and d.superseded_by == "newer"
    assert from_hotset("m", StoredMemory(V, True, j, None)) is None
    assert from_hotset("m", StoredMemory(V, True, "", None)) is None


def test_a_doc_from_a_hotset_value_keeps_the_value_not_a_copy_of_its_json() -> None:
    from sinks.hotset import layout

    j = '{"memory_id": "m", "content": {"text": "hi"}, "occurred_at": "2026-01-01T00:00:00Z", "context_terms": ["x"]}'
    value = layout.encode("0" * 31 + "7", j, superseded_by="newer")
    stored = layout.decode(value)
    assert stored is not None
    d = from_hotset("m", stored, value)
    copied = from_hotset("m", stored)
    assert d is not None and copied is not None
    assert d._json is value and copied._json == j
    want = {
        "memory_id": "m",
        "content": {"text": "hi"},
        "occurred_at": "2026-01-01T00:00:00Z",
        "superseded_by": "newer",
    }
    assert d.record == copied.record == want
    assert d.context_terms == ("x",) and d == copied


def test_cached_docs_share_their_terms_and_repeated_fields() -> None:
    import orjson

    def parsed(mid: str, text: str) -> Doc:
        # Each from its own JSON, as two hotset values are: no string is shared by construction.
        rec = {"memory_id": mid, "type": "event", "session_id": "s-1", "agent_id": "a-1", "visibility": "internal",
               "content": {"text": text}, "occurred_at": NOW.isoformat(), "context_terms": ["deploy"]}  # fmt: skip
        return Doc(mid, orjson.loads(orjson.dumps(rec)))

    a, b = parsed("m1", "rollback the release"), parsed("m2", "the release went out")
    ta, tb = {t: t for t in a.term_counts}, {t: t for t in b.term_counts}
    assert ta["release"] is tb["release"] and ta["deploy"] is tb["deploy"]
    assert a.context_terms[0] is b.context_terms[0]
    for name in ("type", "session_id", "agent_id", "visibility"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.term_counts == {"rollback": 1, "release": 1, "deploy": 1}


def sections(**docs: list[Doc]) -> dict[context.Section, list[Doc | None]]:
    return {k: list(v) for k, v in docs.items()}  # type: ignore[misc]


def test_context_order_budget_and_dedupe() -> None:
    t = NOW.isoformat()
    later = (NOW + timedelta(minutes=1)).isoformat()
    cands = sections(
        identity=[doc("i", "I am bot", type="identity")],
        rules=[doc("r", "be kind", type="rule")],
        decisions=[
            doc("d1", "use pg", type="decision"),
            doc("d0", "use mysql", type="decision", superseded_by="d1"),
        ],
        tasks=[
            doc("t1", "open task", type="task", status="open"),
            doc("t2", "busy task", type="task", status="in_progress"),
            doc("t3", "done task", type="task", status="done"),
        ],
        summary=[doc("s", "summary", type="summary", session_id="s1")],
        recent=[
            doc("e2", "second", session_id="s1", occurred_at=later),
            doc("e1", "first", session_id="s1", occurred_at=t),
            doc("e0", "be kind", session_id="s1"),  # same words as the rule: deduplicated
            doc("x", "other session", session_id="s2"),
            doc("r", "be kind", type="rule"),  # standing knowledge is not transcript
            None,  # expired
        ],
    )
    ctx = context.assemble(cands, 1000, session_id="s1")
    assert [(i.section, i.memory_id) for i in ctx.items] == [
        ("identity", "i"),
        ("rules", "r"),
        ("decisions", "d1"),
        ("tasks", "t2"),
        ("tasks", "t1"),
        ("summary", "s"),
        ("recent", "e1"),
        ("recent", "e2"),
    ]
    assert ctx.used_tokens == sum(i.tokens for i in ctx.items)
    small = context.assemble(cands, 6, session_id="s1")
    assert small.used_tokens <= 6 and sum(small.omitted.values()) > 0
    assert small.items[0].section == "identity"


def test_context_visibility_and_agent_scope() -> None:
    cands = sections(
        rules=[
            doc("pub", "public rule", type="rule", visibility="public"),
            doc("priv", "private rule", type="rule"),
        ],
        identity=[
            doc("mine", "me", type="identity", agent_id="a1"),
            doc("theirs", "them", type="identity", agent_id="a2"),
        ],
    )
    ctx = context.assemble(cands, 1000, agent_id="a1", channel_visibility="public")
    assert {i.memory_id for i in ctx.items} == {"pub"}  # the identities are private
    ctx = context.assemble(cands, 1000, agent_id="a1")
    assert {i.memory_id for i in ctx.items} == {"pub", "priv", "mine"}
    assert {i.memory_id for i in context.assemble(cands, 1000).items} == {"pub", "priv"}
    # Summaries: the session's whoever wrote it; without a session, only this agent's or unowned.
    summaries = sections(summary=[doc("s2", "their summary", type="summary", agent_id="a2", session_id="s")])
    assert [i.memory_id for i in context.assemble(summaries, 1000, session_id="s", agent_id="a1").items] == ["s2"]
    assert context.assemble(summaries, 1000, agent_id="a1").items == []
    assert [i.memory_id for i in context.assemble(summaries, 1000, agent_id="a2").items] == ["s2"]
    assert context.assemble(summaries, 1000).items == []  # a call for no agent sees unscoped ones only


def test_row_to_record_maps_warehouse_types() -> None:
    row = {
        "tenant_id": "t",
        "id": "m",
        "version": Decimal(42),
        "event_id": None,
        "type": "task",
        "content": '{"text": "x", "status": "open"}',
        "metadata": None,
        "citations": "[]",
        "importance": 0.5,
        "occurred_at": datetime(2026, 1, 1),
        "deleted_at": datetime(1970, 1, 1),  # the emulator's NULL
        "is_deleted": False,
        "source_partition": 1,
        "source_offset": 9,
    }
    rec = row_to_record(row, "memory.events")
    assert rec.version == f"{42:032d}" and rec.event_id == "" and rec.metadata == {}
    assert rec.deleted_at is None and rec.occurred_at.tzinfo is not None
    assert rec.source is not None and rec.source.offset == 9
    assert row_to_record({**row, "is_deleted": True}, "e").deleted


def test_search_sql_is_tenant_scoped_and_parameterized() -> None:
    p = search.SearchParams(terms=("kafka", "o'neil"), type="event", channel_visibility="public")
    sql, params = search_sql("AI_MEMORY.MEMORY_RECORDS", p.terms, p, 50)
    assert sql.count("?") == len(params) + 1  # + the tenant, bound by the caller
    assert "o'neil" not in sql and "%o'neil%" in params
    assert "superseded_by IS NULL" in sql and "LIMIT 50" in sql and params[-1] == "public"


@pytest.mark.parametrize("raw", ["1", "0", "yes", "True", ""])
def test_query_bool_is_strict(raw: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(QueryBool).validate_python(raw)
    assert TypeAdapter(QueryBool).validate_python("true") is True


@pytest.mark.parametrize("raw", ["1.0", "false", "0x10", " 5", "101", "0"])
def test_query_int_is_strict(raw: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Limit100).validate_python(raw)
    assert TypeAdapter(Limit100).validate_python("100") == 100


@pytest.mark.parametrize(("ttl", "ok"), [(60, True), (True, False), (0, False), (10**18, False)])
def test_store_body_uses_the_event_models_field_types(ttl: object, ok: bool) -> None:
    from app.gateway.schemas import StoreRequest

    body = {"type": "event", "content": {"text": "x"}, "ttl_seconds": ttl}
    if ok:
        assert StoreRequest.model_validate(body).ttl_seconds == ttl
    else:
        with pytest.raises(ValidationError):
            StoreRequest.model_validate(body)


def test_reconcile_keeps_the_newer_copy_of_each_warehouse_hit() -> None:
    def rec(mid: str, version: int, **cols: Any) -> Any:
        row = {"tenant_id": "t", "id": mid, "version": version, "type": "decision", "key": mid,
               "content": {"text": f"{mid} v{version}"}, "occurred_at": NOW.replace(tzinfo=None)}  # fmt: skip
        return row_to_record({**row, **cols}, "memory.events")

    def slot(r: Any, deleted: bool = False) -> Slot:
        return Slot(r.version, None if deleted else doc(r.memory_id, r.content["text"]), deleted)

    v = "{:032d}".format
    records = [rec("absent", 10), rec("older-hot", 20), rec("same", 30), rec("tomb", 40), rec("lagging", 50)]
    hot = [ABSENT, slot(rec("older-hot", 5)), slot(rec("same", 30)), slot(rec("tomb", 41), deleted=True), ABSENT]
    active = [ActiveEntry(v(10), "absent"), None, None, None, ActiveEntry(v(60), "winner")]
    out = search.reconcile(records, hot, active)
    assert list(out) == ["absent", "older-hot", "same", "tomb", "lagging"]
    assert out["absent"] is not None and out["absent"].source == "warehouse" and out["absent"].superseded_by is None
    assert out["older-hot"] is not None and out["older-hot"].text == "older-hot v20"  # the warehouse is newer
    assert out["same"] is not None and out["same"].source == "hotset"  # the hotset's markers are current
    assert out["tomb"] is None
    assert out["lagging"] is not None and out["lagging"].superseded_by == "winner"
    # An active entry older than the record, or the record itself, supersedes nothing.
    assert search.reconcile([rec("x", 50)], [ABSENT], [ActiveEntry(v(40), "other")])["x"].superseded_by is None  # type: ignore[union-attr]


def test_bm25_reads_the_length_kept_with_the_terms() -> None:
    d = doc("m1", "deploy the deploy script", key="ops", context_terms=["rollback", "deploy"])
    assert d.length == sum(d.term_counts.values()) == 5  # ops, deploy x2, script, rollback once
    fresh = doc("m2", "deploy the deploy script", key="ops", context_terms=["rollback", "deploy"])
    assert fresh.length == 5  # asked first: computed with the terms
    df, n = {"deploy": 3, "script": 40}, 1000
    terms = ("deploy", "script")
    norm = search.K1 * (1 - search.B + search.B * 5 / search.AVG_DOC_TERMS)
    expected = sum(
        search.idf(df[t], n) * tf * (search.K1 + 1) / (tf + norm) for t, tf in (("deploy", 2), ("script", 1))
    )
    assert search.bm25(terms, d, df, n) == pytest.approx(expected)
