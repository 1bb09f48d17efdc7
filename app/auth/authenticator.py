"""From request headers to a Principal: the one place that decides who is calling.

Credentials (docs/contract.md §2): `Authorization: Bearer <JWT>` or `X-API-Key: <key>` (a key is also
accepted as a bearer token). The development tenant header is honoured only when
`dev_tenant_header_enabled` is on and no real credential is presented.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from app.auth.apikeys import SCHEME, ApiKeyStore
from app.auth.errors import Unauthenticated
from app.auth.jwt_auth import JwtVerifier
from app.auth.principal import Principal, Role, valid_tenant
from app.auth.registry import KeyRegistry
from app.auth.secrets import SecretPair
from app.auth.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, ReplayGuard, verify_request_signature
from app.settings import Settings

API_KEY_HEADER = "X-API-Key"
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Credential:
    kind: Literal["api_key", "jwt", "dev"]
    value: str


def extract_credential(headers: Mapping[str, str], dev_header: str | None, dev_enabled: bool = True) -> Credential:
    """Pick the one credential of a request (header names case-insensitive). Two different
    credentials are refused rather than guessed between."""
    lower: dict[str, str] = {}
    for name, value in headers.items():  # a multi-dict (Starlette Headers) yields every copy
        key = name.lower()
        if key in lower and key in ("authorization", API_KEY_HEADER.lower()):
            raise Unauthenticated("present exactly one credential", reason="ambiguous")
        lower[key] = value
    found: list[Credential] = []
    auth = lower.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("unsupported Authorization header (use Bearer)", reason="scheme")
        found.append(Credential("api_key" if token.startswith(SCHEME + "_") else "jwt", token))
    api_key = lower.get(API_KEY_HEADER.lower())
    if api_key is not None:
        found.append(Credential("api_key", api_key.strip()))
    if len(found) > 1:
        raise Unauthenticated("present exactly one credential", reason="ambiguous")
    if found:
        return found[0]
    if dev_header is not None and (tenant := lower.get(dev_header.lower())) is not None:
        if not dev_enabled:
            raise Unauthenticated(f"the development header {dev_header} is disabled", reason="dev_header_disabled")
        return Credential("dev", tenant.strip())
    raise Unauthenticated("credentials required (Authorization: Bearer or X-API-Key)", reason="missing")


def dev_principal(tenant: str) -> Principal:
    if not valid_tenant(tenant):
        raise Unauthenticated("invalid development tenant", reason="dev_tenant")
    return _dev_principal(tenant)


@functools.lru_cache(maxsize=1024)
def _dev_principal(tenant: str) -> Principal:  # frozen: one per tenant serves every request
    return Principal(tenant_id=tenant, principal_id=f"dev:{tenant}", kind="dev", roles=frozenset(Role))


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        api_keys: ApiKeyStore,
        jwt: JwtVerifier,
        replay: ReplayGuard | None = None,
        signing: SecretPair | None = None,
    ) -> None:
        self.settings = settings
        self.api_keys = api_keys
        self.jwt = jwt
        self.replay = replay
        self.signing = signing or SecretPair.from_settings(settings, "request_signing_secret")
        if settings.request_signing_required and self.signing_secret is None:
            raise ValueError("request_signing_required needs request_signing_secret")

    @property
    def signing_secret(self) -> bytes | None:
        """The current signing secret (re-read from its file when that changes)."""
        return self.signing.current.get()

    @classmethod
    def from_settings(
        cls, settings: Settings, redis: aioredis.Redis, registry: KeyRegistry | None = None
    ) -> Authenticator:
        return cls(
            settings,
            ApiKeyStore(
                redis,
                registry=registry,
                peppers=SecretPair.from_settings(settings, "api_key_pepper"),
                negative_ttl_s=settings.api_key_negative_cache_s,
                lookup_concurrency=settings.api_key_lookup_concurrency,
            ),
            JwtVerifier.from_settings(settings),
            ReplayGuard(redis, settings.request_signing_window_s),
        )

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        cred = extract_credential(headers, self.settings.dev_tenant_header, self.settings.dev_tenant_header_enabled)
        if cred.kind == "api_key":
            return await self.api_keys.authenticate(cred.value)
        if cred.kind == "jwt":
            if not self.jwt.enabled:
                raise Unauthenticated("bearer tokens are not configured", reason="jwt_disabled")
            return await self.jwt.verify(cred.value)
        return dev_principal(cred.value)

    def signature_expected(self, method: str, headers: Mapping[str, str]) -> bool:
        """Signed when required for this method, or whenever signature headers are sent."""
        if self.signing_secret is None:
            return False
        if self.settings.request_signing_required and method.upper() in _MUTATING:
            return True
        lower = {k.lower() for k in headers}
        return SIGNATURE_HEADER.lower() in lower or TIMESTAMP_HEADER.lower() in lower

    async def check_signature(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> None:
        """Verify the request signature when one is expected (see `signature_expected`)."""
        if not self.signature_expected(method, headers):
            return
        lower = {k.lower(): v for k, v in headers.items()}
        secrets = self.signing.values()  # current first; the previous one during a rotation
        for i, secret in enumerate(secrets):
            try:
                digest = verify_request_signature(
                    secret,
                    method,
                    target,
                    lower.get(TIMESTAMP_HEADER.lower()),
                    lower.get(SIGNATURE_HEADER.lower()),
                    body,
                    time.time(),
                    self.settings.request_signing_window_s,
                )
                break
            except Unauthenticated as exc:
                if exc.reason != "signature_mismatch" or i == len(secrets) - 1:
                    raise
        else:
            raise Unauthenticated("request signature required", reason="signature_missing")
        if self.replay is not None:
            await self.replay.check(digest)
