"""Text helpers shared by indexing (worker) and search (gateway)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

_WORD = re.compile(r"[0-9a-z]+(?:['_-][0-9a-z]+)*")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
    ]
)
MAX_TERMS_PER_DOC = 64


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form used for dedupe."""
    return " ".join(text.lower().split())


def tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS and len(w) <= 40]


def term_counts(text: str) -> Counter[str]:
    return Counter(tokens(text))


def index_terms(text: str) -> list[str]:
    """Distinct terms to post for a document, capped so one huge chunk can't flood the index
    (then the most frequent ones)."""
    words = tokens(text)
    distinct = list(dict.fromkeys(words))
    if len(distinct) <= MAX_TERMS_PER_DOC:
        return distinct  # the common case; a Counter's most_common costs more than the rest of indexing
    return [t for t, _ in Counter(words).most_common(MAX_TERMS_PER_DOC)]


def digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def estimate_tokens(text: str) -> int:
    """Token estimate for context budgets: ceil(UTF-8 bytes / 4), the usual BPE rule of thumb."""
    return max(1, (len(text.encode("utf-8")) + 3) // 4)
