"""Reading the warehouse back (`memstream rebuild`) needs the warehouse package, not the gateway."""

from __future__ import annotations

import subprocess
import sys

from tests.support.stack import ROOT


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    return set(proc.stdout.split())


def test_rebuild_does_not_import_the_gateway() -> None:
    assert not {m for m in loaded_after("app.rebuild") if m.startswith("app.gateway")}


def test_the_check_can_fail() -> None:
    assert "app.gateway.warehouse" in loaded_after("app.gateway.warehouse")
