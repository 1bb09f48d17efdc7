from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app import redact
from app.models import MemoryEvent
from app.pipeline import event_identifiers
from app.redact import redact_text, redact_value

SECRETS = [
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github_token", "ghp_" + "a1B2" * 9),
    ("github_token", "github_pat_" + "x" * 40),
    ("gitlab_token", "glpat-" + "Ab3" * 7),
    ("slack_token", "xoxb-123456789012-abcdefABCDEF"),
    ("stripe_key", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"),
    ("openai_key", "sk-proj-" + "Z" * 40),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("private_key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"),
    ("url_credentials", "postgres://admin:s3cr3tpass@db.internal:5432/app"),
    ("credential_assignment", "password=hunter22"),
    ("credential_assignment", 'api_key: "abcd1234efgh"'),
    ("credential_assignment", "secret=topsecretvalue"),
    ("credential_assignment", "token=tok_1234567"),
    ("bearer_token", "Authorization: Bearer abcdefghijklmnopqrstuvwx"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "5500-0000-0000-0004"),
]


@pytest.mark.parametrize(("kind", "text"), SECRETS)
def test_each_secret_kind_is_replaced(kind: str, text: str) -> None:
    out, counts = redact_text(f"before {text} after")
    assert f"[REDACTED:{kind}]" in out
    assert counts[kind] >= 1
    assert out.startswith("before ") and out.endswith(" after")


def test_secret_values_never_survive() -> None:
    text = " | ".join(t for _, t in SECRETS)
    out, counts = redact_text(text)
    for needle in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "hunter22", "s3cr3tpass", "4111 1111", "MIIEvQ"):
        assert needle not in out
    assert sum(counts.values()) >= len(SECRETS)


def test_non_secrets_are_left_alone() -> None:
    text = "order 1234 5678 9012 3456 shipped; the password policy is strict; see https://example.org/a"
    out, counts = redact_text(text)
    assert out == text and not counts


def test_redaction_is_idempotent() -> None:
    once, _ = redact_text("key AKIAIOSFODNN7EXAMPLE password=hunter22")
    twice, counts = redact_text(once)
    assert twice == once and not counts


def test_nested_values() -> None:
    from collections import Counter

    counts: Counter[str] = Counter()
    out = redact_value({"a": ["password=hunter22", 3, {"b": "AKIAIOSFODNN7EXAMPLE"}]}, counts)
    assert out == {"a": ["password=[REDACTED:credential_assignment]", 3, {"b": "[REDACTED:aws_access_key]"}]}
    assert counts == {"credential_assignment": 1, "aws_access_key": 1}


@pytest.mark.parametrize(("kind", "text"), SECRETS)
def test_prescreen_never_misses_a_secret(kind: str, text: str) -> None:
    from app.redact import may_contain_secret

    assert may_contain_secret(f"x {text} y"), kind


def test_clean_identifiers_remembered_are_the_repeating_ones() -> None:
    """Event and memory ids are new with every write: the set of clean identifiers must not keep
    them (it grew by two strings per write until it was cleared), while scope ids are kept."""
    redact._CLEAN_IDS.clear()
    for _ in range(500):
        event = MemoryEvent.model_validate(
            {
                "schema_version": 1,
                "event_id": str(uuid.uuid4()),
                "memory_id": str(uuid.uuid4()),
                "tenant_id": "acme",
                "type": "event",
                "content": {"text": "hello"},
                "agent_id": "agent-1",
                "session_id": "s-1",
                "citations": [str(uuid.uuid4())],
                "occurred_at": datetime.now(UTC),
            }
        )
        assert redact.refused_identifier(event_identifiers(event)) is None
    assert sorted(redact._CLEAN_IDS) == ["acme", "agent-1", "s-1"]
    # Not remembered, still checked: a secret in an event id is refused every time.
    assert redact.refused_identifier([("event_id", "AKIAIOSFODNN7EXAMPLE")]) is not None
    assert redact.refused_identifier([("event_id", "AKIAIOSFODNN7EXAMPLE")]) is not None
