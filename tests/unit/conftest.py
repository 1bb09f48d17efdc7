"""Unit tests are pure logic: no services, no network, no subprocess.

A unit test that requests `stack` (directly or through a fixture built on it: `settings`, `rds`,
`worker`, `gateway`, `warehouse_table`, ...) fails before any service starts, and a socket
connection or a child process started from a unit test fails at once. Such a test belongs under
tests/integration/<area>/."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

SERVICE_FIXTURE = "stack"
MOVE = "move it to tests/integration/<area>/"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if SERVICE_FIXTURE in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid} is a unit test but needs the `{SERVICE_FIXTURE}` fixture (real services): {MOVE}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_network_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> NoReturn:
            pytest.fail(f"a unit test opened {what}: {MOVE}", pytrace=False)

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("a network connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("a subprocess"))
    yield
