"""The hotset's one Lua loader: every script file is a `Lua` member, and nothing else loads Lua."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import agents
import app
import sinks
from sinks.hotset import Lua
from sinks.hotset.scripts import source

LOADER = Path(sinks.__file__).parent / "hotset" / "scripts.py"
# The cluster client overrides register_script (the loader's call) so that the scripts the loader
# binds load on every cluster node; it holds no script of its own.
CLIENT = Path(app.__file__).parent / "redis_client.py"


def test_every_lua_file_is_a_member_and_every_member_a_file() -> None:
    files = {p.name for p in resources.files("sinks.hotset").joinpath("lua").iterdir() if p.name.endswith(".lua")}
    assert files == {f"{name.value}.lua" for name in Lua}


def test_sources_are_read_once() -> None:
    for name in Lua:
        assert source(name).lstrip().startswith("--")  # each script opens with its contract
        assert source(name) is source(name)


def test_no_module_but_the_loader_loads_lua() -> None:
    loads = re.compile(r"register_script|\.lua\b|\.eval(sha)?\(")
    offenders = [
        f"{path}:{n}"
        for package in (app, agents, sinks)
        for path in Path(package.__file__).parent.rglob("*.py")
        if path not in (LOADER, CLIENT)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if loads.search(line)
    ]
    assert offenders == []
