"""Local Snowflake for development and tests: a fakesnow server that keeps its data on disk.

The stock server cannot persist across sessions (docs/adr/0001-local-broker-and-warehouse.md):
every login would open the database files again. Here one `FakeSnow(db_path=DIR)` serves every session, the login reply
carries a `masterToken` (so the connector closes its sessions), and SIGTERM checkpoints DuckDB.
Run: `python -m app.warehouse_emulator --port 8085 --data-dir .memstream/warehouse`.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
from pathlib import Path
from typing import Any


def build_app(data_dir: Path | None) -> Any:
    import fakesnow.server as fs_server
    from fakesnow.instance import FakeSnow
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, request_response

    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        fs_server.shared_fs = FakeSnow(db_path=str(data_dir))
    original_login = fs_server.login_request

    async def login_with_master_token(request: Request) -> Response:
        response = await original_login(request)
        body = json.loads(bytes(response.body))
        body["data"]["masterToken"] = secrets.token_urlsafe(32)
        return JSONResponse(body)

    for route in fs_server.app.routes:
        if isinstance(route, Route) and route.path == "/session/v1/login-request":
            route.endpoint = login_with_master_token
            route.app = request_response(login_with_master_token)
    return fs_server


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, default=None, help="persist here (default: in memory)")
    args = parser.parse_args(argv)
    logging.getLogger("fakesnow.server").setLevel(logging.WARNING)
    fs_server = build_app(args.data_dir)
    server = uvicorn.Server(
        uvicorn.Config(fs_server.app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )

    def checkpoint(*_: object) -> None:
        try:
            fs_server.shared_fs.duck_conn.execute("CHECKPOINT")
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            print(f"warehouse emulator: checkpoint failed: {exc}", file=sys.stderr)

    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]

    def on_signal(signum: int, _frame: object) -> None:
        checkpoint()
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.run()
    checkpoint()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
