"""`memstream gateway`: serve the app with uvicorn on settings.gateway_host/port."""

from __future__ import annotations

import importlib.util
from types import FrameType
from typing import Any

from app.auth.tls import uvicorn_ssl_kwargs
from app.settings import Settings


def tls_options(settings: Settings, cert_file: str | None = None, key_file: str | None = None) -> dict[str, Any]:
    """uvicorn TLS arguments (TLS >= 1.2): from --cert/--key, else MEMSTREAM_TLS_CERT_FILE/_KEY_FILE;
    none (plain HTTP) when neither is given."""
    return uvicorn_ssl_kwargs(settings, cert_file, key_file)


def server_options(settings: Settings, cert_file: str | None = None, key_file: str | None = None) -> dict[str, Any]:
    has = importlib.util.find_spec
    return {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "loop": "uvloop" if has("uvloop") else "asyncio",
        "http": "httptools" if has("httptools") else "h11",
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "log_config": None,  # uvicorn logs through the root handler: scrubbed like every line (app/logs.py)
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        **tls_options(settings, cert_file, key_file),
    }


def run_gateway(settings: Settings, cert_file: str | None = None, key_file: str | None = None) -> None:
    import uvicorn

    from app.gateway.app import create_app
    from app.logs import configure as configure_logging
    from app.tracking import init_error_tracking

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Event streams never end on their own: end them before uvicorn waits for its
            # connections to finish (subscribers reconnect elsewhere with Last-Event-ID).
            hub = getattr(app.state, "feed", None)
            if hub is not None:
                hub.shutdown_threadsafe()
            super().handle_exit(sig, frame)

    configure_logging(settings)
    init_error_tracking(settings, "gateway")
    options = server_options(settings, cert_file, key_file)  # bad TLS files fail before binding
    app = create_app(settings)
    Server(uvicorn.Config(app, **options)).run()
