"""TLS settings: uvicorn's ssl arguments and the server context, from a certificate made in the test."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from app.auth.tls import server_context, uvicorn_ssl_kwargs
from app.settings import Settings
from tests.support.auth import self_signed


def settings(**over: object) -> Settings:
    return Settings(_env_file=None, **over)  # type: ignore[arg-type]


def test_tls_kwargs(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert uvicorn_ssl_kwargs(settings()) == {}
    from_env = uvicorn_ssl_kwargs(settings(tls_cert_file=str(cert), tls_key_file=str(key)))
    assert from_env["ssl_certfile"] == str(cert) and from_env["ssl_keyfile"] == str(key)
    with pytest.raises(ValueError, match="without a certificate"):
        uvicorn_ssl_kwargs(settings(tls_key_file=str(key)))
    with pytest.raises(ValueError, match="not found"):
        uvicorn_ssl_kwargs(settings(), str(tmp_path / "missing.pem"), str(key))
    ctx = server_context(settings(tls_min_version="TLSv1.3"), str(cert), str(key))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
