"""`memstream gateway`: serve the app with uvicorn on settings.gateway_host/port."""

from __future__ import annotations

import importlib.util
from typing import Any

from app.settings import Settings


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn TLS arguments (ssl_certfile, ssl_keyfile, ...). The security issue fills this in
    from its certificate settings; plain HTTP on loopback until then."""
    del settings
    return {}


def server_options(settings: Settings) -> dict[str, Any]:
    has = importlib.util.find_spec
    return {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "loop": "uvloop" if has("uvloop") else "asyncio",
        "http": "httptools" if has("httptools") else "h11",
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        **tls_options(settings),
    }


def run_gateway(settings: Settings) -> None:
    import uvicorn

    from app.gateway.app import create_app

    uvicorn.run(create_app(settings), **server_options(settings))
