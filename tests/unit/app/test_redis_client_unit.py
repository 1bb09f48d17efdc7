"""The one Redis client factory: which client a URL asks for, and that nothing else makes one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import agents
import app
import sinks
from app.redis_client import client_options, redis_target
from app.settings import Settings

FACTORY = Path(app.__file__).parent / "redis_client.py"


@pytest.mark.parametrize(
    ("url", "flag", "expected"),
    [
        ("redis://127.0.0.1:6379/0", False, ("redis://127.0.0.1:6379/0", False)),
        ("rediss://h:6380/0", False, ("rediss://h:6380/0", False)),
        ("redis://127.0.0.1:7000", True, ("redis://127.0.0.1:7000", True)),
        ("redis+cluster://127.0.0.1:7000", False, ("redis://127.0.0.1:7000", True)),
        ("rediss+cluster://:pw@h:7000", False, ("rediss://:pw@h:7000", True)),
    ],
)
def test_the_url_or_the_flag_chooses_the_cluster_client(url: str, flag: bool, expected: tuple[str, bool]) -> None:
    assert redis_target(url, flag) == expected


def test_tls_options_only_for_tls_urls() -> None:
    s = Settings(_env_file=None, redis_tls_ca_file="/ca.pem", redis_tls_cert_file="/c.pem", redis_tls_key_file="/k.pem")
    tls = client_options(s, "rediss://h:6380", decode=True, socket_timeout=None)
    assert (tls["ssl_ca_certs"], tls["ssl_certfile"], tls["ssl_keyfile"]) == ("/ca.pem", "/c.pem", "/k.pem")
    plain = client_options(s, "redis://h:6379", decode=False, socket_timeout=7.0)
    assert not any(k.startswith("ssl") for k in plain)
    assert plain["socket_timeout"] == 7.0 and plain["decode_responses"] is False


def test_no_module_but_the_factory_makes_a_redis_client() -> None:
    makes = re.compile(r"from_url\(|\bRedis\(|RedisCluster\(|ConnectionPool\(")
    offenders = [
        f"{path}:{n}"
        for package in (app, agents, sinks)
        for path in Path(package.__file__).parent.rglob("*.py")
        if path != FACTORY
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if makes.search(line)
    ]
    assert offenders == []
