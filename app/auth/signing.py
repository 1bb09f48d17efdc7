"""Optional HMAC request signing for machine producers.

    X-Memstream-Timestamp: <unix seconds>
    X-Memstream-Signature: v1=<hex HMAC-SHA256(secret, canonical)>
    canonical = METHOD "\\n" path[?query as sent] "\\n" timestamp "\\n" hex(sha256(body))

It proves the request was made by a holder of the signing secret and not altered on the way
(method, target, body), and — with the timestamp window and a one-time-use record of each
signature in Redis — that it is not a replay. It complements, never replaces, the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import redis.asyncio as aioredis

from app.auth.errors import Unauthenticated
from sinks.hotset import keys

TIMESTAMP_HEADER = "X-Memstream-Timestamp"
SIGNATURE_HEADER = "X-Memstream-Signature"
VERSION = "v1"
_SIG_RE = re.compile(r"^v1=([0-9a-f]{64})$")
_TS_RE = re.compile(r"^[0-9]{1,12}$")


def canonical_request(method: str, target: str, timestamp: str, body: bytes) -> bytes:
    return "\n".join((method.upper(), target, timestamp, hashlib.sha256(body).hexdigest())).encode()


def sign_request(secret: bytes, method: str, target: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, canonical_request(method, target, timestamp, body), hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def verify_request_signature(
    secret: bytes,
    method: str,
    target: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window_s: float,
) -> str:
    """Check a signed request; returns the signature digest (the replay-guard key) or raises."""
    if not timestamp or not signature:
        raise Unauthenticated("request signature required", reason="signature_missing")
    sig = _SIG_RE.fullmatch(signature.strip().lower())
    if not _TS_RE.fullmatch(timestamp) or sig is None:
        raise Unauthenticated("invalid request signature", reason="signature_malformed")
    if abs(now - int(timestamp)) > window_s:
        raise Unauthenticated("request signature expired", reason="signature_stale")
    expected = sign_request(secret, method, target, timestamp, body).split("=", 1)[1]
    if not hmac.compare_digest(expected, sig.group(1)):
        raise Unauthenticated("invalid request signature", reason="signature_mismatch")
    return sig.group(1)


class ReplayGuard:
    """Each valid signature is accepted once. It is remembered for twice the window (a timestamp
    may be up to one window early or late), after which the window check alone refuses it."""

    def __init__(self, redis: aioredis.Redis, window_s: float) -> None:
        self.redis = redis
        self.ttl_s = int(2 * window_s) + 1

    async def first_use(self, digest: str) -> bool:
        return bool(await self.redis.set(keys.signature_seen(digest), "1", nx=True, ex=self.ttl_s))

    async def check(self, digest: str) -> None:
        if not await self.first_use(digest):
            raise Unauthenticated("request signature already used", reason="signature_replay")
