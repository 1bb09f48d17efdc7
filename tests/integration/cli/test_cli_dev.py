"""`memstream dev` as a newcomer runs it: the whole stack comes up, answers, and a stop signal
takes every process it started down with it (nothing left holding its ports)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app import devstack

ROOT = Path(__file__).resolve().parents[3]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((devstack.LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_dev_stack_starts_and_a_signal_stops_all_of_it(tmp_path: Path, stop_signal: signal.Signals) -> None:
    ports = {name: devstack.free_port() for name in ("kafka", "redis", "snowflake", "gateway")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTREAM_")}
    argv = [sys.executable, "-m", "app.cli", "dev", "--data-dir", str(tmp_path / "data")]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://{devstack.LOOPBACK}:{ports['gateway']}"
        deadline = time.monotonic() + 90
        status, body = 0, {}
        while time.monotonic() < deadline and proc.poll() is None:
            if _listening(ports["gateway"]):
                status, body = _get(f"{base}/ready")
                if status == 200:
                    break
            time.sleep(0.2)
        assert status == 200, (status, body, (tmp_path / "dev.log").read_text())
        assert body["status"] == "ok"

        proc.send_signal(stop_signal)
        assert proc.wait(60) == 0
        still_open = [name for name, port in ports.items() if _listening(port)]
        assert still_open == [], (tmp_path / "dev.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
