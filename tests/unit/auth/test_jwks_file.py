"""JWKS read from a file: keys verify tokens, a damaged file refuses them, a file and a URL together are refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from app.auth.errors import AuthUnavailable
from app.auth.jwt_auth import JwksProvider, JwtConfig, JwtVerifier
from tests.support.auth import AUDIENCE, ISSUER, KeyPair, claims

RSA = KeyPair("RSA", "rsa-live")


def jcfg() -> JwtConfig:
    return JwtConfig(algorithms=("RS256", "ES256"), issuer=ISSUER, audience=AUDIENCE)


async def test_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [RSA.jwk]}))
    verifier = JwtVerifier(jcfg(), JwksProvider(file=str(path)))
    assert (await verifier.verify(RSA.sign(claims("acme")))).tenant_id == "acme"
    path.write_text("not json")
    os.utime(path, (time.time() + 5, time.time() + 5))
    with pytest.raises(AuthUnavailable):
        await verifier.verify(RSA.sign(claims("acme")))
    with pytest.raises(ValueError):
        JwksProvider(file=str(path), url="http://127.0.0.1:1/")
