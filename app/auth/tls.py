"""HTTPS for the gateway: uvicorn keyword arguments that serve TLS >= 1.2 with strong ciphers."""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.settings import Settings

_MIN = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def harden(ctx: ssl.SSLContext, min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """Never below TLS 1.2 whatever the caller asks; no compression, no renegotiation."""
    ctx.minimum_version = max(_MIN[min_version], ssl.TLSVersion.TLSv1_2)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(settings: Settings, cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """A standalone server context (for servers other than uvicorn, and for checks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    password = settings.tls_key_password.get_secret_value() if settings.tls_key_password else None
    ctx.load_cert_chain(cert_file, key_file, password)
    ctx.set_ciphers(settings.tls_ciphers)
    return harden(ctx, settings.tls_min_version)


def uvicorn_ssl_kwargs(settings: Settings, cert_file: str | None = None, key_file: str | None = None) -> dict[str, Any]:
    """`uvicorn.run(..., **kwargs)` arguments; empty (plain HTTP) when no certificate is given.

    The command-line `--cert/--key` win over `MEMSTREAM_TLS_CERT_FILE/_KEY_FILE`.
    """
    cert = cert_file or settings.tls_cert_file
    key = key_file or settings.tls_key_file
    if not cert:
        if key:
            raise ValueError("a TLS key was given without a certificate")
        return {}
    for path in (cert, key):
        if path and not Path(path).is_file():
            raise ValueError(f"TLS file not found: {path}")
    min_version = settings.tls_min_version
    password = settings.tls_key_password.get_secret_value() if settings.tls_key_password else None

    # uvicorn builds the context (certificate chain, ciphers, ALPN); we raise its floor.
    def factory(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return harden(default(), min_version)

    kwargs: dict[str, Any] = {
        "ssl_certfile": cert,
        "ssl_keyfile": key,
        "ssl_keyfile_password": password,
        "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        # AES-GCM/ChaCha20 suites exist only from TLS 1.2 on: the cipher list alone already
        # refuses older protocols on a uvicorn without `ssl_context_factory`.
        "ssl_ciphers": settings.tls_ciphers,
    }
    if _uvicorn_has_context_factory():
        kwargs["ssl_context_factory"] = factory
    return kwargs


def _uvicorn_has_context_factory() -> bool:
    import uvicorn

    return "ssl_context_factory" in inspect.signature(uvicorn.Config.__init__).parameters
