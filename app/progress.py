"""Progress of long CLI runs (import, rebuild) and their resumable checkpoints.

On a terminal a tqdm bar; otherwise (logs, CI, a pipe) one log line at most every few seconds and
one at the end, so a run under a supervisor still shows where it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import orjson
from tqdm import tqdm

log = logging.getLogger("memstream.progress")


class Progress:
    """Counts units of work (bytes of a file, rows of a table) with a bar or periodic log lines."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        unit: str,
        initial: int = 0,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
        bar: bool | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.done = desc, total, unit, initial
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.postfix: dict[str, Any] = {}
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar: tqdm[Any] | None = (
            tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000,
                file=self.stream,
                dynamic_ncols=True,
            )
            if use_bar
            else None
        )
        self._started = time.monotonic()
        self._last_log = self._started

    def update(self, n: int, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(self.postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("%s", self.line())

    def line(self) -> str:
        """One human line: done/total, percentage, rate and the counters."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100.0 * self.done / self.total:.1f}%)" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self.done}{of} {self.unit}{pct}{extra} [{elapsed:.1f}s]"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            log.info("%s", self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def ensure_log_output() -> None:
    """Progress lines need a handler when the CLI has not configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # the progress lines; the libraries' chatter stays at WARNING


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"checkpoint {path} is not valid JSON ({exc}); remove it or pass --restart") from exc
    if not isinstance(data, dict):
        raise ValueError(f"checkpoint {path} does not hold an object; remove it or pass --restart")
    return data


def write_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """Atomically (write a sibling, fsync, rename): a kill -9 leaves the old or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(orjson.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove_checkpoint(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
