"""scripts/provision.sh: installs nothing when the tools are there; without root or sudo it
prints the one command to run and fails, so `make test` stops before any test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "provision.sh"
TOOLS = ("redis-server", "kcat", "promtool", "make")


def _bin(tmp_path: Path, present: tuple[str, ...]) -> Path:
    """A PATH holding only the shell utilities the script uses and stubs of `present`."""
    d = tmp_path / "bin"
    d.mkdir()
    for util in ("id", "sh"):
        found = shutil.which(util)
        assert found
        (d / util).symlink_to(found)
    for tool in present:
        stub = d / tool
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return d


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "PY": sys.executable, "MEMSTREAM_PROVISION_AS_USER": "1", "HOME": os.environ["HOME"]}
    bash = shutil.which("bash")
    assert bash
    return subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def test_nothing_to_do_when_every_tool_is_there(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path, TOOLS))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_without_root_it_prints_the_one_command_and_fails(tmp_path: Path) -> None:
    path = _bin(tmp_path, ("redis-server", "make"))
    (path / "apt-get").write_text("#!/bin/sh\necho apt-get must not run >&2\nexit 3\n")
    (path / "apt-get").chmod(0o755)
    done = _run(path)
    assert done.returncode == 1
    assert "apt-get must not run" not in done.stderr
    commands = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("sudo ")]
    assert commands == ["sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends kcat prometheus'"], (
        done.stderr
    )
