"""Secrets that rotate without a restart: a current and a previous value, each re-read from its
`MEMSTREAM_<NAME>_FILE` when the file changes (mounted Kubernetes secrets and Vault Agent replace
the file; its mtime is checked at most every `secret_file_check_s`). Without a file, the value
from the settings stays as it is.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)


class RotatingSecret:
    def __init__(self, name: str, value: SecretStr | None, path: str | None, check_s: float) -> None:
        self.name = name
        self.path = path
        self.check_s = check_s
        self._value = (value.get_secret_value().encode() or None) if value is not None else None
        self._mtime: int | None = None
        self._checked = time.monotonic()
        if path:
            try:
                self._mtime = os.stat(path).st_mtime_ns
            except OSError:
                self._mtime = None

    @classmethod
    def from_settings(cls, settings: Settings, field: str) -> RotatingSecret:
        value = getattr(settings, field)
        path = os.environ.get(f"{ENV_PREFIX}{field.upper()}_FILE") or None
        return cls(field, value, path, settings.secret_file_check_s)

    def get(self) -> bytes | None:
        if self.path is not None and time.monotonic() - self._checked >= self.check_s:
            self._checked = time.monotonic()
            self._reload(self.path)
        return self._value

    def _reload(self, path: str) -> None:
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime == self._mtime:
                return
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:  # mid-swap or removed: keep the last value read
            log.warning("could not re-read %s from its file: %s", self.name, exc)
            return
        self._mtime = mtime
        self._value = text.encode() or None
        log.info("%s re-read from its file", self.name)


class SecretPair:
    """The current value (used to issue and sign) and the previous one (still accepted)."""

    def __init__(self, current: RotatingSecret, previous: RotatingSecret) -> None:
        self.current = current
        self.previous = previous

    @classmethod
    def from_settings(cls, settings: Settings, field: str) -> SecretPair:
        return cls(
            RotatingSecret.from_settings(settings, field),
            RotatingSecret.from_settings(settings, f"{field}_previous"),
        )

    @classmethod
    def fixed(cls, current: bytes | None, previous: bytes | None = None) -> SecretPair:
        def one(name: str, v: bytes | None) -> RotatingSecret:
            return RotatingSecret(name, SecretStr(v.decode()) if v is not None else None, None, 0.0)

        return cls(one("current", current), one("previous", previous))

    def values(self) -> tuple[bytes, ...]:
        """Every accepted value, the current one first (a value set as both counts once)."""
        cur, prev = self.current.get(), self.previous.get()
        return tuple(v for v in (cur, prev if prev != cur else None) if v is not None)
