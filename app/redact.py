"""Secret redaction: pure functions from text (or an event's fields) to redacted text and counts.

Each finding is replaced by `[REDACTED:<kind>]`. Only counts leave this module, never values.
The rules are data in `app.redact_rules`; `docs/security.md` describes what is redacted where,
and which fields are refused instead.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.redact_rules import CARD_DIGITS, CONTEXT_LITERALS, LONG_RUN, MIN_TOKEN, RULES, TOKEN_LITERALS, Rule

PLACEHOLDER = "[REDACTED:{kind}]"
PLACEHOLDER_RE = re.compile(r"\[REDACTED:[a-z_]+\]")

# A JSON/YAML/dict key naming a secret: its whole string value is one (`{"db_password": "x"}`).
SECRET_FIELD = re.compile(
    r"(?i)(?:^|[_.-])(?:password|passwd|passphrase|pwd|secret|client_?secret|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key(?:[_-]?id)?|account[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token"
    r"|token|credentials?|connection[_-]?string)$"
)


def may_contain_secret(text: str) -> bool:
    """False only for texts no rule can match: the fast path for most messages."""
    low = text.lower()
    for lit in CONTEXT_LITERALS:  # a plain loop: measured faster than any() or one big regex
        if lit in low:
            return True
    if len(text) >= MIN_TOKEN and max(map(len, text.split()), default=0) >= MIN_TOKEN:
        for lit in TOKEN_LITERALS:
            if lit in low:
                return True
        if LONG_RUN.search(text) is not None:
            return True
    return CARD_DIGITS.search(text) is not None


def _applies(rule: Rule, low: str, text: str) -> bool:
    if not rule.needs:
        return LONG_RUN.search(text) is not None
    if rule.needs[0] == "<digits>":
        return CARD_DIGITS.search(text) is not None
    for lit in rule.needs:  # noqa: SIM110 (a plain loop, as in may_contain_secret)
        if lit in low:
            return True
    return False


def _inside_placeholder(text: str, pos: int) -> bool:
    i = text.rfind("[REDACTED:", 0, pos)
    return i >= 0 and text.find("]", i) >= pos


def redact_text(text: str) -> tuple[str, Counter[str]]:
    """Replace every secret in `text`; return the new text and how many of each kind were found."""
    counts: Counter[str] = Counter()
    if not may_contain_secret(text):
        return text, counts
    low = text.lower()
    for rule in RULES:
        if not _applies(rule, low, text):
            continue

        def _sub(m: re.Match[str], rule: Rule = rule) -> str:
            group = rule.group
            if group < 0:
                group = next((i for i, g in enumerate(m.groups(), 1) if g is not None), 0)
            secret = m.group(group)
            if "[REDACTED:" in secret or _inside_placeholder(m.string, m.start(group)):
                return m.group(0)
            if rule.check and not rule.check(secret):
                return m.group(0)
            counts[rule.kind] += 1
            start, end = m.span(group)
            base = m.start(0)
            whole = m.group(0)
            return whole[: start - base] + PLACEHOLDER.format(kind=rule.kind) + whole[end - base :]

        text = rule.pattern.sub(_sub, text)
    return text, counts


def find_secret(text: str) -> str | None:
    """The kind of the first secret in `text`, or None (for fields that are refused, not redacted)."""
    if not may_contain_secret(text):
        return None
    _, counts = redact_text(text)
    return next(iter(counts), None)


def _secret_field_value(value: str, counts: Counter[str]) -> str:
    if not value.strip() or PLACEHOLDER_RE.fullmatch(value) or len(value) < 4:
        return value
    counts["secret_field"] += 1
    return PLACEHOLDER.format(kind="secret_field")


def redact_value(value: object, counts: Counter[str]) -> object:
    """Redact every string inside a JSON-like value: values, and keys of objects. A string value
    under a key that names a secret (`password`, `api_key`, `client_secret`…) is replaced whole."""
    if isinstance(value, str):
        new, found = redact_text(value)
        counts.update(found)
        return new
    if isinstance(value, dict):
        out: dict[Any, object] = {}
        for k, v in value.items():
            if isinstance(k, str):
                new_key, found = redact_text(k)
                counts.update(found)
                while new_key in out:  # two keys redacted alike must not overwrite each other
                    new_key += "_"
                if isinstance(v, str) and SECRET_FIELD.search(k):
                    out[new_key] = _secret_field_value(redact_value(v, counts), counts)  # type: ignore[arg-type]
                    continue
                k = new_key
            out[k] = redact_value(v, counts)
        return out
    if isinstance(value, list):
        return [redact_value(v, counts) for v in value]
    return value


def count_placeholders(value: object) -> Counter[str]:
    """Placeholders already present (an event the gateway redacted before publishing it)."""
    counts: Counter[str] = Counter()
    for s in strings(value):
        if "[REDACTED:" in s:
            counts.update(m.group(0)[10:-1] for m in PLACEHOLDER_RE.finditer(s))
    return counts


def strings(value: object) -> list[str]:
    """Every string in a JSON-like value, object keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


# ---- events: which fields are redacted, which are refused ---------------------------------------

REFUSED_MESSAGE = "{field} contains a secret ({kind}); identifiers are refused, not redacted"


@dataclass(frozen=True)
class Refusal:
    """An identifier holding a secret. Identifiers are refused rather than redacted: two ids
    redacted alike would merge scopes (sessions, supersession keys, agents)."""

    field: str
    kind: str

    @property
    def reason(self) -> str:
        return REFUSED_MESSAGE.format(field=self.field, kind=self.kind)


# Identifiers that name a scope (tenant, session, agent, user, channel, key) repeat from event
# to event: the ones found clean are remembered, so each is checked once. Only clean values are
# kept, never a secret; cleared when full. Event and memory ids (and the memory ids an event
# cites) are new with almost every event: remembering them would only fill the set with values
# never looked up again, a few hundred bytes per write kept until it is cleared, and clear the
# repeating ones with them. They are checked every time instead.
_CLEAN_IDS: set[str] = set()
_CLEAN_IDS_MAX = 100_000
_UNREMEMBERED = ("event_id", "memory_id", "citations.")


def refused_identifier(ids: list[tuple[str, str]]) -> Refusal | None:
    """The first identifier that holds a secret, or None."""
    for loc, value in ids:
        if value in _CLEAN_IDS:
            continue
        kind = find_secret(value)
        if kind is not None:
            return Refusal(loc, kind)
        if loc.startswith(_UNREMEMBERED):
            continue
        if len(_CLEAN_IDS) >= _CLEAN_IDS_MAX:
            _CLEAN_IDS.clear()
        _CLEAN_IDS.add(value)
    return None


def redact_fields(data: dict[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    """Redact the free-text fields of a contract event given as a plain dict: every string of
    `content` but `to_agent` (nested values and object keys), and `metadata` keys and values.
    Identifiers are left to `refused_identifier`."""
    counts: Counter[str] = Counter()
    out = dict(data)
    content = data.get("content")
    if isinstance(content, dict):
        to_agent = content.get("to_agent")
        redacted = redact_value({k: v for k, v in content.items() if k != "to_agent"}, counts)
        assert isinstance(redacted, dict)
        if to_agent is not None:
            redacted["to_agent"] = to_agent
        out["content"] = redacted
    if isinstance(data.get("metadata"), dict):
        out["metadata"] = redact_value(data["metadata"], counts)
    return out, counts
