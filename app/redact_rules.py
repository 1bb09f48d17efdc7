"""Secret detection rules as data: one regular expression per kind of secret.

`app.redact` runs them in order (specific token formats first, context rules last). Each rule
names the group that holds the secret and, optionally, a check the candidate must pass. The
vendor token formats follow the formats the vendors document; `docs/security.md` lists the
kinds and how each is found.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    group: int = 0  # which group is the secret (0: whole match, -1: the first group that matched)
    check: Callable[[str], bool] | None = None
    # The rule runs only on texts holding one of these lowercase substrings; `()`: on texts
    # with a LONG_RUN; `("<digits>",)`: on texts with CARD_DIGITS.
    needs: tuple[str, ...] = ()


# How card numbers are written: one run of digits, or groups of four (the last may be shorter),
# or the 4-6-5 / 4-6-4 grouping of Amex and Diners; one separator throughout. Other groupings
# (a UUID's 8-4-4, a phone number, a date) are not card numbers, whatever their check digit.
_CARD_GROUPS = ((4, 6, 5), (4, 6, 4))


def card_shaped(candidate: str) -> bool:
    seps = {c for c in candidate if not c.isdigit()}
    if not seps:
        return True
    if len(seps) > 1:
        return False
    sizes = tuple(len(g) for g in candidate.split(seps.pop()))
    if sizes in _CARD_GROUPS:
        return True
    return all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4


def card_number(candidate: str) -> bool:
    """A card number, or one followed by more digit groups ("4111 1111 1111 1111 123": the
    CVV goes with it)."""
    if card_shaped(candidate) and luhn_ok(candidate):
        return True
    sep = next((c for c in candidate if not c.isdigit()), None)
    if sep is None:
        return False
    groups = candidate.split(sep)
    return any(card_number(sep.join(groups[:n])) for n in range(len(groups) - 1, 2, -1))


def luhn_ok(candidate: str) -> bool:
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


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


_WORDISH = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*[.!?,]*")
_NOT_SECRET = re.compile(
    r"(?i)(?:https?://\S*|\[REDACTED:[a-z_]+\]|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%\([a-z_]+\)s|"
    r"<[^>]*>|\*+|x+|\.+|null|none|true|false|required|optional|changeme|example|redacted|hidden)"
)

_PATH = re.compile(r"(?:~|\.{1,2})?/[\w.-]+(?:/[\w.-]+)+/?")


def looks_secret(candidate: str) -> bool:
    """A value after a credential word in prose: long enough, not a plain word, not a reference
    (`${VAR}`, a URL, a placeholder), and mixing character classes or high in entropy."""
    s = candidate.strip("`'\"()<>[].,;:!?")
    if len(s) < 6 or _WORDISH.fullmatch(s) or _NOT_SECRET.fullmatch(s):
        return False
    classes = sum(
        (
            any(c.islower() for c in s),
            any(c.isupper() for c in s),
            any(c.isdigit() for c in s),
            any(not c.isalnum() for c in s),
        )
    )
    if s.isdigit():
        return len(s) >= 6
    if not any(c.isalpha() for c in s):
        return False  # dates, times, version numbers, amounts
    return classes >= 2 or entropy(s) >= 3.5


def assigned_ok(candidate: str) -> bool:
    """A value assigned to a credential name (`password=…`, `"token": "…"`, `--password …`)."""
    s = candidate.strip("`'\"")
    if len(s) < 4 or _NOT_SECRET.fullmatch(s) or _PATH.fullmatch(s):
        return False
    return not (s.isdigit() and len(s) < 6)  # `tokens: 1500`, `password: 1` are counts


# Credential names: a word that names a secret, possibly inside a longer identifier
# (DB_PASSWORD, client_secret, x-api-key, AccountKey).
_CRED_NAME = (
    r"(?:password|passwd|passphrase|pass|pwd|secret|client[_-]?secret|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|account[_-]?key|shared[_-]?access[_-]?key|auth[_-]?token|access[_-]?token"
    r"|refresh[_-]?token|token|credentials?)"
)
# An identifier containing a credential name: left edge not a letter or digit (so `DB_PASSWORD`
# and `x-api-key` match, `bypass` and `compass` do not).
_CRED_IDENT = rf"(?<![A-Za-z0-9]){_CRED_NAME}(?:[_.-]?[A-Za-z0-9]+)*"
_VALUE = r"([^\s\"',;&<>`)\]}]+)"

PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"
)

_CRED_WORDS = ("pass", "pwd", "secret", "key", "token", "cred")

RULES: tuple[Rule, ...] = (
    Rule("private_key", PEM, needs=("-----begin",)),
    Rule(
        "aws_secret_key",
        # a secret access key right after its key id: `AKIA… / wJalr…`
        re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}[\s:/,;|\"'=]{1,5}([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
        group=1,
        needs=("akia", "asia"),
    ),
    Rule(
        "aws_access_key",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA|ANPA|AGPA)[0-9A-Z]{16}\b"),
        needs=("akia", "asia", "abia", "acca", "aroa", "aida", "anpa", "agpa"),
    ),
    Rule(
        "aws_secret_key",
        re.compile(
            r"(?i:aws[_ .-]?secret[_ .-]?(?:access[_ .-]?)?key(?:[_ .-]?id)?|secret[_ .-]?access[_ .-]?key)"
            r"[\"']?\s*(?:[:=]|\bis\b|\bwas\b|\s)\s*[\"'`]?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        group=1,
        needs=("secret",),
    ),
    Rule(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        needs=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "gitlab_token",
        re.compile(r"\bgl(?:pat|dt|rt|ptt|soat|ft|imt|agent|oas)-[A-Za-z0-9_-]{20,}"),
        needs=("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "glft-", "glimt-", "glagent-", "gloas-"),
    ),
    Rule(
        "slack_token",
        re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{10,}"),
        needs=("xox", "xapp-"),
    ),
    Rule(
        "slack_webhook",
        re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"),
        needs=("hooks.slack",),
    ),
    Rule(
        "stripe_key",
        re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b|\bwhsec_[A-Za-z0-9]{24,}\b"),
        needs=("_live_", "_test_", "whsec_"),
    ),
    Rule("anthropic_key", re.compile(r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{20,}"), needs=("sk-ant-",)),
    Rule("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), needs=("sk-",)),
    Rule("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), needs=("aiza",)),
    Rule("google_oauth_secret", re.compile(r"\bGOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])"), needs=("gocspx-",)),
    Rule("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), needs=("npm_",)),
    Rule("pypi_token", re.compile(r"\bpypi-AgE[A-Za-z0-9_-]{50,}"), needs=("pypi-",)),
    Rule(
        "sendgrid_key",
        re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
        needs=("sg.",),
    ),
    Rule("twilio_key", re.compile(r"\bSK[0-9a-fA-F]{32}\b")),
    Rule("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"), needs=("eyj",)),
    Rule(
        "azure_sas",
        re.compile(r"(?i:SharedAccessSignature\s*=\s*)([^;\s\"']+)|[?&]sig=([A-Za-z0-9%/+=]{20,})"),
        group=-1,
        needs=("sharedaccesssignature", "sig="),
    ),
    Rule("azure_storage_key", re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])")),
    Rule(
        "url_credentials",
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"']*:([^\s@/\"']+)@"),
        group=1,
        needs=("://",),
    ),
    Rule("bearer_token", re.compile(r"(?i:\bbearer)\s+([A-Za-z0-9._~+/=-]{16,})"), group=1, needs=("bearer",)),
    Rule(
        "bearer_token",
        re.compile(r"(?i:\b(?:basic|token))\s+([A-Za-z0-9._~+/=-]{16,})"),
        group=1,
        check=looks_secret,
        needs=("basic", "token"),
    ),
    Rule(
        "cli_password",
        re.compile(
            # `mysql -uroot -pSECRET`, `sshpass -p SECRET`, `redis-cli -a SECRET`, `curl -u user:pass`
            r"\b(?:mysql(?:dump|admin|sh)?|mariadb(?:-dump)?|mongo(?:sh|dump|restore|export|import)?|sshpass)\b"
            r"[^\n|;&]*?\s-p\s*([^\s\"'-][^\s\"']*)"
            r"|\bredis-cli\b[^\n|;&]*?\s(?:-a|--pass)\s+([^\s\"']+)"
            r"|\bcurl\b[^\n|;&]*?\s(?:-u|--user)\s+[\"']?[^\s:\"']+:([^\s\"']+)"
        ),
        group=-1,
        check=assigned_ok,
        needs=("mysql", "mariadb", "mongo", "sshpass", "redis-cli", "curl"),
    ),
    Rule(
        "credential_assignment",
        # --name value, --name=value, name=value, name: value, "name": "value", name => value
        re.compile(
            rf"(?<![A-Za-z0-9-])--?(?i:{_CRED_IDENT})(?:\s+|=)[\"']?{_VALUE}"
            rf"|(?i:{_CRED_IDENT})[\"']?\s*(?:[:=]|=>|:=)\s*[\"'`]?{_VALUE}"
        ),
        group=-1,
        check=assigned_ok,
        needs=_CRED_WORDS,
    ),
    Rule(
        "credential_in_prose",
        # "the staging db password for bob is Xy7…", "my github token: …", "the key is …"
        re.compile(
            rf"(?i:(?<![A-Za-z0-9])(?:{_CRED_NAME}|key)s?\b)"
            r"[^\n.!]{0,48}?(?i:\b(?:is|are|was|were|reads|to|it[\u2019']?s)\b|[:=]|->|=>)\s*"
            r"(?:(?i:just|now|still|simply|literally|set\s+to|actually)\s+)?[\"'`<(]?([^\s\"'`<>()]{6,})"
        ),
        group=1,
        check=looks_secret,
        needs=_CRED_WORDS,
    ),
    Rule("credit_card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), check=card_number, needs=("<digits>",)),
)

# The prefilter (`app.redact.may_contain_secret`): a text holding none of CONTEXT_LITERALS, no
# whitespace-free chunk of MIN_TOKEN characters or more, no LONG_RUN and no CARD_DIGITS has no secret. Vendor
# tokens are long chunks, so their literals (TOKEN_LITERALS) are tested only when one is present.
CONTEXT_LITERALS: tuple[str, ...] = (
    "pass",
    "pwd",
    "secret",
    "key",
    "token",
    "cred",
    "://",
    "mysql",
    "mariadb",
    "mongo",
    "redis-cli",
    "curl",
    "-----begin",
    "[redacted:",
)
MIN_TOKEN = 15
_ALL = tuple(dict.fromkeys(lit for rule in RULES for lit in rule.needs))
TOKEN_LITERALS: tuple[str, ...] = tuple(
    lit
    for lit in _ALL
    if lit != "<digits>"
    and not any(c in lit for c in CONTEXT_LITERALS)
    and not any(o != lit and o in lit for o in _ALL)
)
# Twilio and Azure storage keys have no literal: a long token.
LONG_RUN = re.compile(r"[A-Za-z0-9+/]{34}")
CARD_DIGITS = re.compile(r"(?:\d[ -]?){12}\d")
