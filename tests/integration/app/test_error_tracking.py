"""Error tracking end to end in a child process: without a DSN sentry_sdk is never imported; with
a loopback DSN the events reach a tiny local HTTP server, scrubbed of content."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.stack import ROOT, wait_until

CONTENT = "the user's secret diary entry 4111111111111111"
SCRIPT = f"""
import logging, sys
from app.settings import Settings
from app.tracking import init_error_tracking
started = init_error_tracking(Settings(_env_file=None), "worker")
print("started" if started else "off", "sentry_sdk" in sys.modules, flush=True)
try:
    raise ValueError({CONTENT!r})
except ValueError:
    logging.getLogger("memstream.test").exception("ingest failed for %s", {CONTENT!r})
if started:
    import sentry_sdk
    sentry_sdk.flush(10)
"""


def run(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTREAM_")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_no_dsn_no_sentry() -> None:
    assert run({}) == "off False"


def test_events_reach_a_loopback_dsn_scrubbed() -> None:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "br":
                import brotli  # type: ignore[import-not-found]

                body = brotli.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
        assert run({"MEMSTREAM_SENTRY_DSN": dsn}) == "started True"
        wait_until(lambda: any(b"ValueError" in r for r in received), timeout_s=30)
    finally:
        server.shutdown()
        server.server_close()
    sent = b"\n".join(received)
    assert b"ingest failed for %s" in sent  # the log template
    assert CONTENT.encode() not in sent and b"4111111111111111" not in sent
