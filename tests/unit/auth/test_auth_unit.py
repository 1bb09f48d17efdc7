"""Security building blocks without services: JWT attacks, API key hashing, signing, RBAC."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.auth.apikeys import (
    ALG_HMAC,
    ALG_SHA,
    ApiKeyRecord,
    hash_api_key,
    key_prefix,
    new_api_key,
    parse_duration,
    verify_api_key,
)
from app.auth.authenticator import dev_principal, extract_credential
from app.auth.errors import Forbidden, Unauthenticated
from app.auth.jwt_auth import JwtConfig, verify_jwt
from app.auth.principal import Principal, Role, parse_roles
from app.auth.rbac import PERMISSIONS, Action, authorize, matrix_markdown, scoped_agent
from app.auth.signing import sign_request, verify_request_signature
from app.models import AuditEntry
from app.settings import Settings
from tests.support.auth import AUDIENCE, HS_SECRET, ISSUER, KeyPair, claims, raw_token

RSA = KeyPair("RSA", "rsa-1")
EC = KeyPair("EC", "ec-1")
JWKS = [RSA.jwk, EC.jwk]


def cfg(**over: Any) -> JwtConfig:
    base: dict[str, Any] = {
        "algorithms": ("HS256", "RS256", "ES256"),
        "hs_secret": None,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway_s": 5.0,
    }
    base.update(over)
    return JwtConfig(**base)


def refused(token: str, config: JwtConfig, reason: str, jwks: list[dict[str, Any]] = JWKS) -> None:
    with pytest.raises(Unauthenticated) as info:
        verify_jwt(token, config, jwks)
    assert info.value.reason == reason, info.value.reason
    assert info.value.status == 401


# --- JWT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [RSA, EC], ids=["RS256", "ES256"])
def test_jwt_asymmetric_accepted(pair: KeyPair) -> None:
    p = verify_jwt(pair.sign(claims("acme", roles=["reader", "bogus"], agent_id="a1")), cfg(), JWKS)
    assert p == Principal(
        tenant_id="acme",
        principal_id="jwt:agent-service",
        kind="jwt",
        roles=frozenset({Role.READER}),
        agent_id="a1",
        key_id=pair.kid,
    )


def test_jwt_hs256_accepted_with_secret() -> None:
    token = jwt.encode(claims(roles="reader writer"), HS_SECRET, algorithm="HS256")
    p = verify_jwt(token, cfg(hs_secret=HS_SECRET.encode()))
    assert p.roles == {Role.READER, Role.WRITER} and p.tenant_id == "acme"


def test_jwt_alg_none_refused() -> None:
    for alg in ("none", "None", "NONE"):
        refused(
            raw_token({"alg": alg, "typ": "JWT"}, claims(), None),
            cfg(hs_secret=HS_SECRET.encode()),
            "algorithm",
        )


def test_jwt_expired_refused_beyond_leeway() -> None:
    now = int(time.time())
    refused(RSA.sign(claims(exp=now - 60, iat=now - 120, nbf=now - 120)), cfg(), "expired")
    # Within the configured clock-skew leeway it is still accepted.
    assert verify_jwt(RSA.sign(claims(exp=now - 2, iat=now - 60, nbf=now - 60)), cfg(leeway_s=30), JWKS)
    refused(RSA.sign(claims(exp=now - 2, iat=now - 60, nbf=now - 60)), cfg(leeway_s=0), "expired")


def test_jwt_not_yet_valid_refused() -> None:
    now = int(time.time())
    refused(RSA.sign(claims(nbf=now + 600)), cfg(), "not_yet_valid")
    assert verify_jwt(RSA.sign(claims(nbf=now + 3)), cfg(leeway_s=30), JWKS)


def test_jwt_wrong_audience_or_issuer_refused() -> None:
    refused(RSA.sign(claims(aud="someone-else")), cfg(), "audience")
    refused(RSA.sign(claims(aud=None)), cfg(), "missing_claim")
    refused(RSA.sign(claims(iss="https://evil.test")), cfg(), "issuer")
    refused(RSA.sign(claims(iss=None)), cfg(), "missing_claim")


def test_jwt_required_claims() -> None:
    refused(RSA.sign(claims(exp=None)), cfg(), "missing_claim")
    refused(RSA.sign(claims(sub=None)), cfg(), "missing_claim")
    refused(RSA.sign(claims(tenant_id=None)), cfg(), "tenant_claim")
    refused(RSA.sign(claims(tenant_id="bad tenant!")), cfg(), "tenant_claim")
    refused(RSA.sign(claims(tenant_id=["acme"])), cfg(), "tenant_claim")


def test_jwt_tampered_signature_or_payload_refused() -> None:
    token = RSA.sign(claims())
    head, payload, sig = token.split(".")
    flipped = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    refused(f"{head}.{payload}.{flipped}", cfg(), "signature")
    # Another tenant's claims under the original signature.
    other = RSA.sign(claims("victim")).split(".")[1]
    refused(f"{head}.{other}.{sig}", cfg(), "signature")
    refused("not.a.jwt", cfg(), "malformed")
    refused("x" * 9000, cfg(), "too_large")


def test_jwt_hs256_signed_with_rsa_public_key_refused() -> None:
    """The key-confusion attack: HS256 'signed' with the server's RSA public key."""
    forged_pem = raw_token({"alg": "HS256", "typ": "JWT", "kid": RSA.kid}, claims(), RSA.public_pem)
    forged_jwk = raw_token({"alg": "HS256", "kid": RSA.kid}, claims(), RSA.jwk["n"].encode())
    for forged in (forged_pem, forged_jwk):
        # Only asymmetric keys configured: HS256 has no key at all.
        refused(forged, cfg(), "algorithm")
        # HS256 not in the allow-list.
        refused(forged, cfg(algorithms=("RS256",), hs_secret=HS_SECRET.encode()), "algorithm")
        # HS256 allowed with its own secret: the public key is never used as an HMAC secret.
        refused(forged, cfg(hs_secret=HS_SECRET.encode()), "signature")


def test_jwt_algorithm_bound_to_key_type() -> None:
    # An ES256 header naming the RSA key, or RS256 naming the EC key: no such key.
    rs_token_under_ec_kid = jwt.encode(claims(), RSA.private, algorithm="RS256", headers={"kid": EC.kid})
    refused(rs_token_under_ec_kid, cfg(), "unknown_key")
    refused(RSA.sign(claims(), kid="unknown"), cfg(), "unknown_key")
    # RS256 not allowed at all.
    refused(RSA.sign(claims()), cfg(algorithms=("ES256",)), "algorithm")
    # Without a kid, an ambiguous JWKS is refused rather than tried key by key.
    no_kid = jwt.encode(claims(), RSA.private, algorithm="RS256")
    refused(no_kid, cfg(), "unknown_key", [RSA.jwk, {**KeyPair("RSA", "rsa-2").jwk}])
    assert verify_jwt(no_kid, cfg(), [RSA.jwk])
    # A JWK marked for encryption is not a signing key.
    refused(RSA.sign(claims()), cfg(), "unknown_key", [{**RSA.jwk, "use": "enc"}])


def test_jwt_custom_claims() -> None:
    token = RSA.sign(claims(tenant_id=None, org="globex", scopes=["admin"]))
    p = verify_jwt(token, cfg(tenant_claim="org", roles_claim="scopes"), JWKS)
    assert p.tenant_id == "globex" and p.roles == {Role.ADMIN}


def test_settings_refuse_none_algorithm_and_short_secret() -> None:
    with pytest.raises(ValueError, match="unsupported JWT algorithms"):
        Settings(_env_file=None, jwt_algorithms=["none"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtConfig.from_settings(Settings(_env_file=None, jwt_hs256_secret="short"))  # type: ignore[call-arg]


# --- API keys ----------------------------------------------------------------------------


def test_api_key_format_and_hash() -> None:
    key, rec = new_api_key("acme", frozenset({Role.WRITER}), None, 1000.0, agent_id="a1")
    assert key.startswith(f"msk_{rec.prefix}_") and key_prefix(key) == rec.prefix
    assert rec.hash_alg == ALG_SHA and rec.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(rec.to_redis()) and key.split("_", 2)[2] not in str(rec.to_redis())
    assert ApiKeyRecord.from_redis(rec.prefix, rec.to_redis()) == rec
    p = verify_api_key(key, rec, None, 1001.0)
    assert (p.tenant_id, p.kind, p.agent_id, p.key_id) == ("acme", "api_key", "a1", rec.prefix)
    alg, digest = hash_api_key(key, b"pepper")
    assert alg == ALG_HMAC and digest != rec.key_hash


@pytest.mark.parametrize("bad", ["", "msk_", "msk_zz_abc", "Bearer x", "msk_0123456789abcdef_short", "x" * 80])
def test_api_key_malformed(bad: str) -> None:
    assert key_prefix(bad) is None


def test_api_key_refusals() -> None:
    key, rec = new_api_key("acme", frozenset({Role.READER}), b"pepper", 1000.0, expires_in_s=60)
    assert verify_api_key(key, rec, b"pepper", 1059.0).tenant_id == "acme"
    cases = [
        (key, rec, b"pepper", 1060.0, "key_expired"),
        (key, rec.__class__(**{**rec.__dict__, "revoked": True}), b"pepper", 1001.0, "key_revoked"),
        (key, rec, b"other-pepper", 1001.0, "key_unknown"),
        (key, rec, None, 1001.0, "key_unknown"),
        (key[:-1] + ("A" if key[-1] != "A" else "B"), rec, b"pepper", 1001.0, "key_unknown"),
        (key, None, b"pepper", 1001.0, "key_unknown"),
    ]
    for presented, record, pepper, now, reason in cases:
        with pytest.raises(Unauthenticated) as info:
            verify_api_key(presented, record, pepper, now)
        assert info.value.reason == reason
        assert info.value.message == "invalid API key"  # one message: nothing to probe


def test_damaged_record_counts_as_revoked() -> None:
    _, rec = new_api_key("acme", frozenset({Role.READER}), None, 1.0)
    h = rec.to_redis()
    del h["revoked"]
    assert ApiKeyRecord.from_redis(rec.prefix, h).revoked  # type: ignore[union-attr]
    assert ApiKeyRecord.from_redis(rec.prefix, {}) is None


def test_new_api_key_validation() -> None:
    with pytest.raises(ValueError):
        new_api_key("bad tenant", frozenset({Role.READER}), None, 0.0)
    with pytest.raises(ValueError):
        new_api_key("acme", frozenset(), None, 0.0)
    with pytest.raises(ValueError):
        new_api_key("acme", frozenset({Role.READER}), None, 0.0, agent_id="x" * 200)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("45s", 45), ("3600", 3600), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "1y", "d", "1.5h"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- credentials from headers -------------------------------------------------------------


def test_extract_credential() -> None:
    key = "msk_0123456789abcdef_" + "a" * 43
    assert extract_credential({"X-API-Key": key}, None).kind == "api_key"
    assert extract_credential({"authorization": f"Bearer {key}"}, None).kind == "api_key"
    assert extract_credential({"Authorization": "bearer a.b.c"}, None).value == "a.b.c"
    assert extract_credential({"X-Dev": "acme"}, "X-Dev").kind == "dev"
    # A real credential wins over the development header.
    assert extract_credential({"X-Dev": "acme", "X-API-Key": key}, "X-Dev").kind == "api_key"
    for headers, reason in [
        ({}, "missing"),
        ({"X-Dev": "acme"}, "missing"),  # no dev header configured
        ({"Authorization": "Basic dXNlcjpwdw=="}, "scheme"),
        ({"Authorization": "Bearer "}, "scheme"),
        ({"Authorization": "Bearer a.b.c", "X-API-Key": key}, "ambiguous"),
    ]:
        with pytest.raises(Unauthenticated) as info:
            extract_credential(headers, None)
        assert info.value.reason == reason
    from starlette.datastructures import Headers

    twice = Headers(raw=[(b"x-api-key", key.encode()), (b"x-api-key", b"other")])
    with pytest.raises(Unauthenticated) as info:
        extract_credential(twice, None)
    assert info.value.reason == "ambiguous"
    with pytest.raises(Unauthenticated) as info:
        extract_credential({"x-dev": "acme"}, "X-Dev", dev_enabled=False)
    assert info.value.reason == "dev_header_disabled"
    with pytest.raises(Unauthenticated):
        dev_principal("bad tenant!")


# --- request signing ----------------------------------------------------------------------

SECRET = b"signing-secret"


def test_signature_roundtrip_and_tampering() -> None:
    now = 1_700_000_000
    ts = str(now)
    body = b'{"x":1}'
    sig = sign_request(SECRET, "post", "/api/v2/memory/store?wait=visible", ts, body)
    assert sig.startswith("v1=")
    verify_request_signature(SECRET, "POST", "/api/v2/memory/store?wait=visible", ts, sig, body, now + 10, 300)
    bad: list[tuple[Any, ...]] = [
        ("GET", "/api/v2/memory/store?wait=visible", ts, sig, body, now, "signature_mismatch"),
        ("POST", "/api/v2/memory/store", ts, sig, body, now, "signature_mismatch"),
        ("POST", "/api/v2/memory/store?wait=visible", ts, sig, b'{"x":2}', now, "signature_mismatch"),
        ("POST", "/api/v2/memory/store?wait=visible", str(now + 1), sig, body, now, "signature_mismatch"),
        ("POST", "/api/v2/memory/store?wait=visible", ts, sig, body, now + 301, "signature_stale"),
        ("POST", "/api/v2/memory/store?wait=visible", ts, sig, body, now - 301, "signature_stale"),
        ("POST", "/api/v2/memory/store?wait=visible", None, sig, body, now, "signature_missing"),
        ("POST", "/api/v2/memory/store?wait=visible", ts, None, body, now, "signature_missing"),
        ("POST", "/api/v2/memory/store?wait=visible", "1e9", sig, body, now, "signature_malformed"),
        ("POST", "/api/v2/memory/store?wait=visible", ts, "v2=" + sig[3:], body, now, "signature_malformed"),
    ]
    for method, target, t, s, b, at, reason in bad:
        with pytest.raises(Unauthenticated) as info:
            verify_request_signature(SECRET, method, target, t, s, b, at, 300)
        assert info.value.reason == reason
    with pytest.raises(Unauthenticated):
        verify_request_signature(b"other", "POST", "/api/v2/memory/store?wait=visible", ts, sig, body, now, 300)


# --- RBAC ---------------------------------------------------------------------------------

# The expected matrix, written independently of PERMISSIONS.
EXPECTED = {
    "memory.read": "rwa",
    "memory.search": "rwa",
    "context.read": "rwa",
    "handoff.read": "rwa",
    "stats.read": "rwa",
    "memory.write": "wa",
    "memory.delete": "wa",
    "handoff.create": "wa",
    "handoff.ack": "wa",
    "admin.keys": "a",
    "admin.erasure": "a",
    "admin.export": "a",
}
_LETTER = {Role.READER: "r", Role.WRITER: "w", Role.ADMIN: "a"}


def principal(*roles: Role, agent: str | None = None) -> Principal:
    return Principal(tenant_id="acme", principal_id="t", kind="jwt", roles=frozenset(roles), agent_id=agent)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", list(Role))
def test_rbac_matrix(role: Role, action: Action) -> None:
    should = _LETTER[role] in EXPECTED[action.value]
    if should:
        authorize(principal(role), action)
    else:
        with pytest.raises(Forbidden) as info:
            authorize(principal(role), action)
        assert info.value.status == 403
    assert set(EXPECTED) == {a.value for a in PERMISSIONS}


@pytest.mark.parametrize("action", list(Action))
def test_no_roles_no_access(action: Action) -> None:
    with pytest.raises(Forbidden):
        authorize(principal(), action)


def test_agent_scope() -> None:
    p = principal(Role.WRITER, agent="a1")
    authorize(p, Action.MEMORY_WRITE, acting_agent="a1")
    authorize(p, Action.MEMORY_WRITE)
    with pytest.raises(Forbidden):
        authorize(p, Action.MEMORY_WRITE, acting_agent="a2")
    assert scoped_agent(p, None) == "a1" and scoped_agent(p, "a1") == "a1"
    with pytest.raises(Forbidden):
        scoped_agent(p, "a2")
    assert scoped_agent(principal(Role.WRITER), "a2") == "a2"


def test_parse_roles_and_matrix_doc() -> None:
    assert parse_roles("reader, admin") == {Role.READER, Role.ADMIN}
    assert parse_roles(None) == frozenset() and parse_roles([1, "writer"]) == {Role.WRITER}
    table = matrix_markdown()
    assert "| `admin.keys` | — | — | yes |" in table


def test_docs_hold_the_permission_matrix() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    between = doc.split("<!-- matrix:start -->\n", 1)[1].split("\n<!-- matrix:end -->", 1)[0]
    assert between == matrix_markdown()


def test_security_secrets_never_printed() -> None:
    secrets_ = {
        "jwt_hs256_secret": "hs-" + "x" * 40,
        "api_key_pepper": "pepper-value-123",
        "request_signing_secret": "signing-value-456",
        "tls_key_password": "tls-pass-789",
        "kafka_sasl_password": "sasl-pass-000",
    }
    s = Settings(_env_file=None, kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", **secrets_)  # type: ignore[arg-type]
    dumped = repr(s) + str(s.model_dump())
    for value in secrets_.values():
        assert value not in dumped
    assert s.kafka_client_config()["security.protocol"] == "SASL_SSL"


def test_secret_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pepper"
    path.write_text("from-a-file\n")
    monkeypatch.setenv("MEMSTREAM_API_KEY_PEPPER_FILE", str(path))
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.api_key_pepper is not None and s.api_key_pepper.get_secret_value() == "from-a-file"


def test_audit_entry_holds_ids_not_content() -> None:
    from app.auth.audit import MAX_RESOURCE_IDS, audit_entry

    p = Principal(
        tenant_id="acme",
        principal_id="key:0123",
        kind="api_key",
        roles=frozenset({Role.READER}),
        agent_id="a1",
    )
    e = audit_entry(
        p,
        Action.MEMORY_SEARCH,
        status_code=200,
        latency_ms=3.21234,
        request_id="r" * 100,
        resource_type="memory",
        resource_ids=["m1", "m2", "m1", ""],
        details={
            "count": 2,
            "q": "my secret text",
            "text": "content",
            "token": "eyJ",
            "source": "hotset",
            "x": [1],
        },
    )
    assert (e.tenant_id, e.principal, e.action, e.success, e.status_code) == (
        "acme",
        "key:0123",
        "memory.search",
        True,
        200,
    )
    assert e.resource_ids == ["m1", "m2"] and e.latency_ms == 3.212 and e.request_id == "r" * 64
    assert e.details == {"count": 2, "source": "hotset", "as_agent": "a1", "kind": "api_key"}
    assert "secret" not in e.to_json().decode() and "content" not in e.to_json().decode()
    many = audit_entry(p, "memory.read", status_code=404, latency_ms=-1, resource_ids=[f"m{i}" for i in range(250)])
    assert len(many.resource_ids) == MAX_RESOURCE_IDS and many.details["resource_ids_total"] == 250
    assert not many.success and many.latency_ms == 0.0
    # Built without re-validation: the same entry, and the same bytes, as validating its values.
    for entry in (e, many):
        again = AuditEntry.model_validate(entry.model_dump())
        assert again == entry and again.to_json() == entry.to_json() == entry.model_dump_json().encode()
    for bad in ({"status_code": 99}, {"status_code": 600}, {"resource_type": "x" * 65}):
        with pytest.raises(ValueError):
            audit_entry(p, "memory.read", **{"status_code": 200, "latency_ms": 1.0, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        audit_entry(p, "", status_code=200, latency_ms=1.0)


def test_docs_hold_the_endpoint_table() -> None:
    from app.auth.endpoints import ROUTE_ACTIONS, endpoints_markdown

    doc = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    between = doc.split("<!-- endpoints:start -->\n", 1)[1].split("\n<!-- endpoints:end -->", 1)[0]
    assert between == endpoints_markdown()
    assert set(ROUTE_ACTIONS.values()) == set(Action) - {Action.ADMIN_KEYS}
