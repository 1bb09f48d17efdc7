"""Text helpers shared by indexing (worker) and search (gateway)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[0-9a-z]+(?:['_-][0-9a-z]+)*")  # ASCII text: the common case, and the fast one
# Scripts written without spaces between words (Han, kana, Thai, Lao): a run of them is indexed
# as overlapping character bigrams, as search engines do for CJK, so a query finds words inside.
_RUN = "\u0e00-\u0eff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# Letters and digits of any script, and the combining marks that Indic scripts write inside words
# (not `\w` characters: without them a Hindi word fell apart at each vowel sign).
_MARKS = "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0900-\u0dff\u1ab0-\u1aff\u1dc0-\u1dff"
_LETTER = f"(?:[^\\W_{_RUN}]|[{_MARKS}])"
_UNICODE_WORD = re.compile(f"[{_RUN}]+|{_LETTER}+(?:['_-]{_LETTER}+)*")
_IN_RUN = re.compile(f"[{_RUN}]")
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
    """Index and query terms: lower-cased words of 2-40 characters, stopwords out; text beyond
    ASCII is NFKC-normalized first, and runs of Han, kana, Thai or Lao become character bigrams
    (a lone character stays a term)."""
    if text.isascii():
        return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS and len(w) <= 40]
    out: list[str] = []
    for w in _UNICODE_WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        if _IN_RUN.match(w):
            out.extend([w] if len(w) == 1 else [w[i : i + 2] for i in range(len(w) - 1)])
        elif 1 < len(w) <= 40 and w not in STOPWORDS:
            out.append(w)
    return out


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


def contextual_terms(
    own: Sequence[str], previous_text: str, previous_terms: Sequence[str] | None = None
) -> tuple[str, ...]:
    """Terms a conversation turn is also found by: those of the previous turn of its session that
    its own terms lack, within the per-document cap. A short reply ("yes, let's do that") is then
    found by the words of the question it answers. `previous_terms`, when the caller has them, are
    `index_terms(previous_text)`."""
    room = MAX_TERMS_PER_DOC - len(own)
    if room <= 0 or not previous_text:
        return ()
    mine = set(own)
    lent = index_terms(previous_text) if previous_terms is None else previous_terms
    return tuple(t for t in lent if t not in mine)[:room]


def digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def estimate_tokens(text: str) -> int:
    """Token estimate for context budgets: ceil(UTF-8 bytes / 4), the usual BPE rule of thumb."""
    return max(1, (len(text.encode("utf-8")) + 3) // 4)
