"""Secret redaction: a pure function from text to (redacted text, counts by kind).

Each finding is replaced by `[REDACTED:<kind>]`. Only counts leave this module, never values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PLACEHOLDER = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    group: int = 0  # which group is the secret (0: whole match)
    check: Callable[[str], bool] | None = None


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Order matters: specific token formats first, generic assignments last.
RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)"
        ),
    ),
    Rule("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    Rule(
        "aws_secret_key",
        re.compile(
            r"(?i:\b(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)\b)[\"']?\s*[:=]\s*[\"']?"
            r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        group=1,
    ),
    Rule("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    Rule("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b")),
    Rule("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    Rule("slack_webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    Rule("stripe_key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    Rule("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}\b")),
    Rule("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")),
    Rule(
        "url_credentials",
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@"),
        group=1,
    ),
    Rule("bearer_token", re.compile(r"(?i:\bbearer)\s+([A-Za-z0-9._~+/=-]{16,})"), group=1),
    Rule(
        "credential_assignment",
        re.compile(
            r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token)\b)"
            r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{4,})"
        ),
        group=1,
    ),
    Rule("credit_card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), check=_luhn_ok),
)

_PLACEHOLDER_RE = re.compile(r"\[REDACTED:[a-z_]+\]")
# Every rule needs one of these (case-insensitive) substrings, or a long run of digits (cards):
# most texts have none, and substring tests cost far less than running every rule.
_LITERALS = (
    "-----begin",
    "akia",
    "asia",
    "abia",
    "acca",
    "secret",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "hooks.slack",
    "_live_",
    "_test_",
    "sk-",
    "eyj",
    "://",
    "bearer",
    "password",
    "passwd",
    "pwd",
    "api_key",
    "api-key",
    "apikey",
    "token",
)
_CARD_DIGITS = re.compile(r"(?:\d[ -]?){12}\d")


def may_contain_secret(text: str) -> bool:
    low = text.lower()
    for lit in _LITERALS:  # a plain loop: measured faster than any() or one big regex
        if lit in low:
            return True
    return _CARD_DIGITS.search(text) is not None


def redact_text(text: str) -> tuple[str, Counter[str]]:
    """Replace every secret in `text`; return the new text and how many of each kind were found."""
    counts: Counter[str] = Counter()
    if not may_contain_secret(text):
        return text, counts
    for rule in RULES:

        def _sub(m: re.Match[str], rule: Rule = rule) -> str:
            secret = m.group(rule.group)
            if _PLACEHOLDER_RE.fullmatch(secret) or (rule.check and not rule.check(secret)):
                return m.group(0)
            counts[rule.kind] += 1
            start, end = m.span(rule.group)
            base = m.start(0)
            whole = m.group(0)
            return whole[: start - base] + PLACEHOLDER.format(kind=rule.kind) + whole[end - base :]

        text = rule.pattern.sub(_sub, text)
    return text, counts


def redact_value(value: object, counts: Counter[str]) -> object:
    """Redact every string inside a JSON-like value (content fields, metadata)."""
    if isinstance(value, str):
        new, found = redact_text(value)
        counts.update(found)
        return new
    if isinstance(value, dict):
        return {k: redact_value(v, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, counts) for v in value]
    return value
