from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.logs import configure
from app.settings import Settings


def test_production_refuses_the_dev_tenant_header() -> None:
    with pytest.raises(ValidationError, match="refused"):
        Settings(_env_file=None, env="production", dev_tenant_header_enabled=True)
    assert Settings(_env_file=None, env="development", dev_tenant_header_enabled=True).dev_tenant_header_enabled


def test_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("MEMSTREAM_SNOWFLAKE_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("MEMSTREAM_TOPIC_PREFIX", "staging.")
    s = Settings(_env_file=None)
    assert s.snowflake_password is not None and s.snowflake_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.topic_events == "staging.memory.events"


def test_hotset_ttls_merge_over_defaults_and_reject_unknown_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSTREAM_HOTSET_TTL_SECONDS", '{"event": 60}')
    s = Settings(_env_file=None)
    assert s.hotset_ttl_seconds["event"] == 60 and s.hotset_ttl_seconds["decision"] == 90 * 86400
    monkeypatch.setenv("MEMSTREAM_HOTSET_TTL_SECONDS", '{"memo": 60}')
    with pytest.raises(ValidationError, match="unknown memory types"):
        Settings(_env_file=None)


def test_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure(Settings(_env_file=None, log_json=True, log_level="INFO"))
        logging.getLogger("memstream.test").info("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        entry = json.loads(line)
        assert entry["msg"] == "hello world" and entry["level"] == "info" and entry["logger"] == "memstream.test"
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
