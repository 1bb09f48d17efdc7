"""HTTPS serving with a certificate made in the test (loopback only)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app import devstack
from app.auth.tls import uvicorn_ssl_kwargs
from app.settings import Settings
from tests.support.auth import self_signed


def settings(**over: object) -> Settings:
    return Settings(_env_file=None, **over)  # type: ignore[arg-type]


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = self_signed(tmp_path)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    port = devstack.free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **uvicorn_ssl_kwargs(settings(), str(cert), str(key)),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    assert config.ssl is not None and config.ssl.minimum_version >= ssl.TLSVersion.TLSv1_2
    yield port, cert
    server.should_exit = True
    thread.join(10)


def test_https_serves_with_generated_certificate(https: tuple[int, Path]) -> None:
    port, cert = https
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trust, timeout=5) as client:
        resp = client.get(f"https://127.0.0.1:{port}/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_untrusted_and_plaintext_and_old_tls_refused(https: tuple[int, Path]) -> None:
    port, cert = https
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get(f"https://127.0.0.1:{port}/health")  # not in the system trust store
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.get(f"http://127.0.0.1:{port}/health")
    old = ssl.create_default_context(cafile=str(cert))
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
