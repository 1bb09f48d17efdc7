"""Recall on the seeded secrets corpus, precision on real chat messages, and the per-field rules."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from typing import Any

import orjson
import pytest

from app.logs import scrub
from app.models import DeadLetter, MemoryEvent
from app.pipeline import Incoming, prepare, validate
from app.redact import find_secret, may_contain_secret, redact_text, redact_value, refused_identifier
from tests.support.secrets_corpus import Sample, corpus

CORPUS = corpus()
PRECISION_MESSAGES = 2000
MAX_FALSE_POSITIVE_RATE = 0.005


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 60
    assert len({s.kind for s in CORPUS}) >= 15
    assert {"prose", "json", "yaml", "env", "cli"} <= {s.form for s in CORPUS}
    assert corpus() == CORPUS  # fixed seed: the same corpus every run


@pytest.mark.parametrize("sample", CORPUS, ids=lambda s: f"{s.kind}-{s.form}")
def test_every_secret_is_redacted(sample: Sample) -> None:
    assert sample.secret in sample.text
    assert may_contain_secret(sample.text)
    out, counts = redact_text(sample.text)
    assert sample.secret not in out, out
    assert counts


def test_every_secret_is_redacted_in_one_long_message() -> None:
    out, _ = redact_text("\n\n".join(s.text for s in CORPUS))
    assert [s.secret for s in CORPUS if s.secret in out] == []


def chat_messages(n: int) -> list[str]:
    from app.workload import conversation_events

    return [e["content"]["text"] for e in conversation_events(["t"], n, seed=13)]


def test_real_chat_messages_come_through_unchanged() -> None:
    messages = chat_messages(PRECISION_MESSAGES)
    assert len(messages) == PRECISION_MESSAGES
    changed = [(m, redact_text(m)[0]) for m in messages if redact_text(m)[0] != m]
    rate = len(changed) / len(messages)
    assert rate <= MAX_FALSE_POSITIVE_RATE, changed[:10]


def test_chat_with_a_secret_planted_loses_only_the_secret() -> None:
    secret = CORPUS[0].secret
    messages = chat_messages(50)
    for m in messages:
        planted = f"{m} btw note to self: the api key is {secret}"
        out, counts = redact_text(planted)
        assert secret not in out and out.startswith(m) and sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "the password policy is strict",
        "the key is to relax",
        "Token count: 1500",
        "use --password-file /etc/app/pw",
        "password: ********",
        "api_key: ${API_KEY}",
        "ssh -p 2222 deploy@host",
        "docker run -p 8080:80 nginx",
        "the secret ingredient is Love",
        "order 1234 5678 9012 3456 shipped; see https://example.org/a",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert redact_text(text) == (text, Counter())


def test_keys_naming_a_secret_redact_their_whole_value() -> None:
    counts: Counter[str] = Counter()
    out = redact_value({"db": {"password": "hunter2"}, "token_count": 5, "AKIAIOSFODNN7EXAMPLE": "x"}, counts)
    assert out == {"db": {"password": "[REDACTED:secret_field]"}, "token_count": 5, "[REDACTED:aws_access_key]": "x"}


# ---- events: redacted fields, refused identifiers, dead letters ---------------------------------

GH = "ghp_" + "a1B2" * 9
AWS_ID = "AKIAIOSFODNN7EXAMPLE"


def incoming(**over: Any) -> Incoming:
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant_id": "acme",
        "type": "event",
        "session_id": "s1",
        "content": {"text": "hello"},
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    body.update(over)
    return Incoming(orjson.dumps(body), "memory.events", 0, 7)


def test_every_free_text_field_is_redacted() -> None:
    msg = incoming(
        type="handoff",
        content={
            "text": f"deploy with {GH}",
            "to_agent": "deployer",
            "task": "run mysql -uroot -pS3cretPass1 app",
            "notes": [{"aws": f"{AWS_ID} / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}],
        },
        metadata={AWS_ID: "name", "nested": {"client_secret": "abc123def456"}},
    )
    event = validate(msg)
    assert isinstance(event, MemoryEvent)
    record = prepare(event, msg.position).record.to_json().decode()
    for needle in (GH, AWS_ID, "S3cretPass1", "wJalrXUtnFEMI", "abc123def456"):
        assert needle not in record
    assert '"to_agent":"deployer"' in record
    assert orjson.loads(record)["redactions"]["github_token"] == 1


def test_placeholders_from_the_gateway_are_counted_by_the_worker() -> None:
    event = validate(incoming(content={"text": "key [REDACTED:github_token]"}))
    assert isinstance(event, MemoryEvent)
    assert prepare(event, incoming().position).record.redactions == {"github_token": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", GH),
        ("session_id", "password=hunter22"),
        ("agent_id", AWS_ID),
        ("user_id", "sk-proj-" + "Z" * 40),
        ("event_id", GH),
        ("memory_id", GH),
        ("tenant_id", AWS_ID),
        ("channel", {"id": GH, "visibility": "private"}),
        ("citations", ["c-1", GH]),
    ],
)
def test_identifiers_holding_a_secret_are_refused(field: str, value: Any) -> None:
    dl = validate(incoming(**{field: value}))
    assert isinstance(dl, DeadLetter)
    assert dl.stage == "redact" and "contains a secret" in dl.reason and field in dl.reason
    secret = value if isinstance(value, str) else GH
    assert secret.split("=")[-1] not in dl.model_dump_json()
    assert dl.original_redacted and "[REDACTED:" in base64.b64decode(dl.original_b64).decode()
    assert dl.tenant_id == (None if field == "tenant_id" else "acme")


def test_invalid_events_dead_letter_redacted_never_raw() -> None:
    raw = orjson.dumps({"schema_version": 1, "tenant_id": "acme", "mood": f"token: {GH}", "password": "hunter22"})
    dl = validate(Incoming(raw, "memory.events", 0, 1))
    assert isinstance(dl, DeadLetter)
    kept = base64.b64decode(dl.original_b64).decode()
    assert GH not in kept and "hunter22" not in kept and dl.original_redacted
    assert dl.original_bytes == len(raw) and dl.original_sha256 == hashlib.sha256(raw).hexdigest()


def test_dead_letter_reasons_hold_no_input_values() -> None:
    dl = validate(incoming(op="upsert-" + GH, importance="very " + GH))
    assert isinstance(dl, DeadLetter)
    assert GH not in dl.reason and "literal_error" in dl.reason
    dl = validate(incoming(**{"x " + GH: 1}))
    assert isinstance(dl, DeadLetter) and GH not in dl.reason and "extra_forbidden" in dl.reason


def test_non_utf8_dead_letters_keep_only_length_and_hash() -> None:
    raw = b"\xff\xfe password=hunter22 " + GH.encode()
    dl = validate(Incoming(raw, "memory.events", 0, 1))
    assert isinstance(dl, DeadLetter)
    assert dl.original_b64 == "" and not dl.original_redacted
    assert dl.original_bytes == len(raw) and dl.original_sha256 == hashlib.sha256(raw).hexdigest()


def test_log_lines_are_scrubbed() -> None:
    line = f"prepare failed: 1 validation error [type=string_type, input_value='my diary: {GH}', input_type=str]"
    out = scrub(line)
    assert GH not in out and "my diary" not in out and "input_value=<hidden>" in out


# ---- the gateway's write path (pure: request data -> the event it publishes) --------------------


def test_gateway_publishes_redacted_events() -> None:
    from app.gateway.writes import encode, validated

    data = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant_id": "acme",
        "occurred_at": "2026-01-01T00:00:00Z",
        "type": "event",
        "content": {"text": f"note to self: the token is {GH}", "more": {"api_key": "abcd1234efgh"}},
        "metadata": {AWS_ID: "x"},
    }
    published = encode(validated(data)).decode()
    assert GH not in published and AWS_ID not in published and "abcd1234efgh" not in published
    assert published.count("[REDACTED:") == 3


@pytest.mark.parametrize("field", ["key", "session_id", "agent_id", "user_id"])
def test_gateway_refuses_identifiers_holding_a_secret(field: str) -> None:
    from app.gateway.errors import ApiError
    from app.gateway.writes import validated

    data = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant_id": "acme",
        "occurred_at": "2026-01-01T00:00:00Z",
        "type": "decision",
        "content": {"text": "x"},
        field: f"password={GH}",
    }
    with pytest.raises(ApiError) as err:
        validated(data, ("body", "items", 3))
    assert err.value.status == 422 and err.value.code == "validation_error"
    [detail] = err.value.details
    assert detail["loc"] == f"body.items.3.{field}" and detail["type"] == "secret_in_identifier"
    assert GH not in repr(err.value.details) + err.value.message


def test_import_redacts_and_refuses() -> None:
    from app.importer import prepare_line

    ok = incoming(content={"text": f"token: {GH}"}).value
    refused = incoming(event_id="e-2", session_id=f"password={GH}").value
    assert ok is not None and refused is not None
    published = prepare_line(ok + b"\n")
    assert isinstance(published, tuple) and GH not in published[1].decode()
    assert prepare_line(refused) == "session_id contains a secret (github_token); identifiers are refused, not redacted"


def test_a_uuid_whose_digits_pass_the_card_check_is_not_refused() -> None:
    uuid_like_card = "04341925-4122-4482-889e-aff309cad683"  # digit groups pass the card pattern and Luhn
    assert refused_identifier([("event_id", uuid_like_card)]) is None
    assert refused_identifier([("key", "4111 1111 1111 1111")]) is not None


@pytest.mark.parametrize(
    "text",
    [
        "sdk-59536638-7670-4033-be3d-d5b40a4c25d0",  # 8-4-4 digit groups that pass Luhn, with a prefix
        "ref 04341925-4122-4482-889e-aff309cad683 closed",
        "call 4111111-1111-1111-1",  # one separator, but not grouped as a card is written
        "4111 1111-1111 1111",  # two separators
    ],
)
def test_digit_runs_not_grouped_as_cards_are_not_cards(text: str) -> None:
    assert find_secret(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "card 4111 1111 1111 1111 exp soon",
        "amex 3782-822463-10005",
        "pay with 4111 1111 1111 1111 123",  # the CVV after it does not hide it
    ],
)
def test_cards_as_they_are_written_are_found(text: str) -> None:
    assert find_secret(text) == "credit_card"
