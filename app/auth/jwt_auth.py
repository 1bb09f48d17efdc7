"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 (and kin) with keys from a JWKS.

Every algorithm is bound to its kind of key before the signature is checked: an HS* token is
only ever verified with the configured HMAC secret and an RS*/PS*/ES* token only with a JWKS key
of the matching type. That closes the classic confusion where an HS256 token is "signed" with
the server's RSA public key, as well as `alg: none`. Pure verification in `verify_jwt`; the JWKS
loading (file or URL, with an explicit timeout and a cache) is the thin adapter `JwksProvider`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt

from app.auth.errors import AuthUnavailable, Unauthenticated
from app.auth.principal import Principal, parse_roles, valid_agent, valid_tenant
from app.auth.secrets import SecretPair
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8192
MAX_JWKS_BYTES = 1 << 20
MIN_HS_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key must be at least 256 bits

# Algorithm family -> the JWK key type it may be verified with.
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


@dataclass(frozen=True)
class JwtConfig:
    algorithms: tuple[str, ...]
    hs_secret: bytes | None = None
    hs_previous: bytes | None = None  # still accepted during a rotation
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 30.0
    tenant_claim: str = "tenant_id"
    roles_claim: str = "roles"
    agent_claim: str = "agent_id"

    @classmethod
    def from_settings(cls, s: Settings) -> JwtConfig:
        secret = (s.jwt_hs256_secret.get_secret_value().encode() or None) if s.jwt_hs256_secret else None
        prev = s.jwt_hs256_secret_previous
        previous = (prev.get_secret_value().encode() or None) if prev else None  # an emptied file: none
        for name, value in (("jwt_hs256_secret", secret), ("jwt_hs256_secret_previous", previous)):
            if value is not None and len(value) < MIN_HS_SECRET_BYTES:
                raise ValueError(f"{name} must be at least {MIN_HS_SECRET_BYTES} bytes")
        return cls(
            algorithms=tuple(s.jwt_algorithms),
            hs_secret=secret,
            hs_previous=previous,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            leeway_s=s.jwt_leeway_s,
            tenant_claim=s.jwt_tenant_claim,
            roles_claim=s.jwt_roles_claim,
            agent_claim=s.jwt_agent_claim,
        )


def unverified_header(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated("invalid bearer token", reason="too_large")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated("invalid bearer token", reason="malformed") from exc
    return header


def _signing_key(alg: str, kid: str | None, cfg: JwtConfig, jwks: Sequence[Mapping[str, Any]]) -> Any:
    if alg not in cfg.algorithms:  # "none" can never be in the list (settings validator)
        raise Unauthenticated("invalid bearer token", reason="algorithm")
    if alg.startswith("HS"):
        if cfg.hs_secret is None:
            raise Unauthenticated("invalid bearer token", reason="algorithm")
        return cfg.hs_secret
    kty = _KTY.get(alg[:2])
    candidates = [
        k
        for k in jwks
        if k.get("kty") == kty
        and k.get("use", "sig") == "sig"
        and k.get("alg", alg) == alg
        and (kid is None or k.get("kid") == kid)
    ]
    # Without a kid the choice must be unambiguous: never try keys one after another.
    if len(candidates) != 1:
        raise Unauthenticated("invalid bearer token", reason="unknown_key")
    try:
        return jwt.PyJWK(dict(candidates[0]), algorithm=alg).key
    except jwt.PyJWKError as exc:
        raise Unauthenticated("invalid bearer token", reason="unknown_key") from exc


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "audience"),
    (jwt.InvalidIssuerError, "issuer"),
    (jwt.InvalidSignatureError, "signature"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
)


def verify_jwt(token: str, cfg: JwtConfig, jwks: Sequence[Mapping[str, Any]] = ()) -> Principal:
    """The principal of a valid token, or Unauthenticated with a short reason."""
    header = unverified_header(token)
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
        raise Unauthenticated("invalid bearer token", reason="malformed")
    key = _signing_key(alg, kid, cfg, jwks)
    # HS*: the previous secret is tried only when the current one does not match the signature.
    keys = [key, cfg.hs_previous] if alg.startswith("HS") and cfg.hs_previous else [key]
    required = ["exp", "sub"] + (["iss"] if cfg.issuer else []) + (["aud"] if cfg.audience else [])
    for i, k in enumerate(keys):
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                k,
                algorithms=[alg],  # exactly the one algorithm this key was chosen for
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": required},
            )
            break
        except jwt.InvalidSignatureError:
            if i < len(keys) - 1:
                continue
            raise Unauthenticated("invalid bearer token (signature)", reason="signature") from None
        except jwt.InvalidTokenError as exc:
            reason = next((r for t, r in _REASONS if isinstance(exc, t)), "invalid")
            raise Unauthenticated(f"invalid bearer token ({reason.replace('_', ' ')})", reason=reason) from exc
    tenant = claims.get(cfg.tenant_claim)
    if not valid_tenant(tenant):
        raise Unauthenticated("invalid bearer token (no valid tenant claim)", reason="tenant_claim")
    sub = claims["sub"]
    agent = claims.get(cfg.agent_claim)
    if agent is not None and not valid_agent(agent):
        raise Unauthenticated("invalid bearer token (bad agent claim)", reason="agent_claim")
    assert isinstance(tenant, str)
    return Principal(
        tenant_id=tenant,
        principal_id=f"jwt:{str(sub)[:200]}",
        kind="jwt",
        roles=parse_roles(claims.get(cfg.roles_claim)),
        agent_id=agent,
        key_id=kid or (str(claims["jti"])[:128] if "jti" in claims else None),
    )


class JwksProvider:
    """Public keys from a JWKS file (re-read when it changes) or URL (cached, bounded refresh)."""

    def __init__(
        self,
        file: str | None = None,
        url: str | None = None,
        timeout_s: float = 3.0,
        cache_s: float = 300.0,
        min_refresh_s: float = 30.0,
    ) -> None:
        if file and url:
            raise ValueError("configure a JWKS file or a JWKS URL, not both")
        self.file = Path(file) if file else None
        self.url = url
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        # An unknown kid triggers at most one refetch per interval: forged kids cannot make us
        # hammer the identity provider.
        self.min_refresh_s = min(min_refresh_s, cache_s) if cache_s else min_refresh_s
        self._keys: list[dict[str, Any]] = []
        self._loaded_at: float | None = None
        self._failed_at: float | None = None
        self._mtime: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, s: Settings) -> JwksProvider | None:
        if not (s.jwt_jwks_file or s.jwt_jwks_url):
            return None
        return cls(s.jwt_jwks_file, s.jwt_jwks_url, s.jwt_jwks_timeout_s, s.jwt_jwks_cache_s)

    async def keys(self, refresh: bool = False) -> list[dict[str, Any]]:
        if self.file is not None:
            return self._from_file()
        async with self._lock:
            now = time.monotonic()
            if self._failed_at is not None and now - self._failed_at < self.min_refresh_s:
                if not self._keys:  # the provider is down: do not wait on it for every request
                    raise AuthUnavailable("token keys unavailable", reason="jwks_fetch")
            elif (
                self._loaded_at is None
                or now - self._loaded_at >= self.cache_s
                or (refresh and now - self._loaded_at >= self.min_refresh_s)
            ):
                await self._fetch()
        return self._keys

    def _from_file(self) -> list[dict[str, Any]]:
        assert self.file is not None
        try:
            mtime = self.file.stat().st_mtime
            if mtime != self._mtime:
                self._keys = parse_jwks(self.file.read_bytes())
                self._mtime = mtime
        except (OSError, ValueError) as exc:
            raise AuthUnavailable("token keys unavailable", reason="jwks_file") from exc
        return self._keys

    async def _fetch(self) -> None:
        assert self.url is not None
        try:
            body = bytearray()
            async with (
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream("GET", self.url, headers={"Accept": "application/json"}) as resp,
            ):
                resp.raise_for_status()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:  # bounded read: a hostile endpoint cannot exhaust memory
                        raise ValueError("JWKS too large")
            self._keys = parse_jwks(bytes(body))
            self._loaded_at = time.monotonic()
            self._failed_at = None
        except (httpx.HTTPError, ValueError) as exc:
            # Keep serving the last good keys (if any); retry after the refresh interval.
            self._failed_at = time.monotonic()
            if not self._keys:
                raise AuthUnavailable("token keys unavailable", reason="jwks_fetch") from exc


def parse_jwks(raw: bytes) -> list[dict[str, Any]]:
    doc = json.loads(raw)
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    return [k for k in keys if isinstance(k, dict)]


class JwtVerifier:
    """Verification with keys resolved from the provider (an unknown kid refreshes once)."""

    def __init__(self, cfg: JwtConfig, jwks: JwksProvider | None = None, hs: SecretPair | None = None) -> None:
        self._cfg = cfg
        self.jwks = jwks
        self.hs = hs  # with `*_FILE` secrets: re-read when the files change

    @classmethod
    def from_settings(cls, s: Settings) -> JwtVerifier:
        return cls(
            JwtConfig.from_settings(s), JwksProvider.from_settings(s), SecretPair.from_settings(s, "jwt_hs256_secret")
        )

    @property
    def cfg(self) -> JwtConfig:
        if self.hs is not None:
            current, previous = self.hs.current.get(), self.hs.previous.get()
            if (current, previous) != (self._cfg.hs_secret, self._cfg.hs_previous):
                if any(v is not None and len(v) < MIN_HS_SECRET_BYTES for v in (current, previous)):
                    log.error(
                        "an HS256 secret re-read from its file is shorter than %d bytes: ignored", MIN_HS_SECRET_BYTES
                    )
                else:
                    self._cfg = replace(self._cfg, hs_secret=current, hs_previous=previous)
        return self._cfg

    @property
    def enabled(self) -> bool:
        return self.cfg.hs_secret is not None or self.jwks is not None

    async def verify(self, token: str) -> Principal:
        header = unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.startswith("HS") or self.jwks is None:
            return verify_jwt(token, self.cfg)
        if alg not in self.cfg.algorithms:
            raise Unauthenticated("invalid bearer token", reason="algorithm")
        keys = await self.jwks.keys()
        kid = header.get("kid")
        if kid is not None and not any(k.get("kid") == kid for k in keys):
            keys = await self.jwks.keys(refresh=True)
        return verify_jwt(token, self.cfg, keys)
