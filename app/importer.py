"""`memstream import FILE.jsonl`: publish memory events from a JSON Lines file.

Each line is one event (docs/contract.md §1). The file is streamed: lines are validated one by one,
valid ones are published to `memory.events` keyed by tenant with acks=all in chunks, invalid ones
are reported with their line number and reason and not published. After every chunk whose
deliveries the broker acknowledged, a checkpoint file records the byte offset after its last
line, so a run stopped by Ctrl-C, SIGTERM or kill -9 resumes there. Lines whose event id the
hotset has already processed, or that repeat a recent line's event id, are counted as duplicates
and not published again; anything republished anyway changes nothing (event ids are
idempotency keys). Secrets are redacted before publishing, and a line whose identifiers hold one
is refused (docs/security.md).
"""

from __future__ import annotations

import hashlib
import signal
import sys
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import redis
from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from app.models import MemoryEvent
from app.pipeline import event_identifiers, redact
from app.progress import Progress, ensure_log_output, read_checkpoint, remove_checkpoint, write_checkpoint
from app.redact import refused_identifier
from app.redis_client import create_sync_redis
from app.settings import Settings
from sinks.hotset import keys

CHUNK_LINES = 2000
RECENT_IDS = 100_000  # event ids remembered across chunks (bounded: constant memory)
HEAD_BYTES = 4096  # a checkpoint belongs to the file whose first bytes hash to its `head`
SHOWN_REJECTS = 1000


class ImportFailed(RuntimeError):
    pass


@dataclass
class Counts:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejected_lines: list[int] = field(default_factory=list)  # the first SHOWN_REJECTS

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "rejected_lines": self.rejected_lines,
        }


@dataclass
class Line:
    number: int
    end: int  # byte offset just after the line
    raw: bytes


def read_lines(path: Path, offset: int, first_line: int) -> Iterator[Line]:
    """The file's lines from `offset` on, with their numbers and end offsets (streamed)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        pos, number = offset, first_line
        for raw in fh:
            pos += len(raw)
            yield Line(number, pos, raw)
            number += 1


def validate_line(raw: bytes) -> MemoryEvent | str | None:
    """The event, the reason it is invalid, or None for a blank line (pure)."""
    line = raw.strip()
    if not line:
        return None
    try:
        return MemoryEvent.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        return f"{loc}: {first['msg']}"
    except ValueError as exc:
        return str(exc)


def prepare_line(raw: bytes) -> tuple[MemoryEvent, bytes] | str | None:
    """The event and the bytes to publish (secrets redacted, as the gateway publishes it), the
    reason the line is rejected, or None for a blank line (pure)."""
    result = validate_line(raw)
    if not isinstance(result, MemoryEvent):
        return result
    refusal = refused_identifier(event_identifiers(result))
    if refusal is not None:
        return refusal.reason
    redacted, _ = redact(result)
    if redacted is not result:
        return result, orjson.dumps(redacted.model_dump(mode="json", exclude_none=True))
    return result, raw.strip()


def file_head(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()


def default_checkpoint(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoint")


class Importer:
    def __init__(self, settings: Settings, dry_run: bool) -> None:
        self.settings, self.dry_run = settings, dry_run
        self.topic = settings.topic_events
        self.producer: Producer | None = (
            None if dry_run else Producer({**settings.kafka_client_config(), "acks": "all", "linger.ms": 5})
        )
        self.redis: redis.Redis | None = create_sync_redis(settings)
        self.recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))

    def already_processed(self, ids: list[tuple[str, str]]) -> list[bool]:
        """Whether the hotset's event-id ledger holds each (tenant, event id); all False when
        Redis cannot answer (the worker still ignores a replay)."""
        if self.redis is None or not ids:
            return [False] * len(ids)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for tenant, event_id in ids:
                pipe.exists(keys.seen(tenant, event_id))
            return [bool(x) for x in pipe.execute()]
        except redis.RedisError as exc:
            print(f"warning: duplicate check skipped, Redis unavailable ({exc})", file=sys.stderr)
            self.redis = None
            return [False] * len(ids)

    def publish_chunk(self, chunk: list[tuple[str, str, bytes]], counts: Counts) -> None:
        """Publish a chunk of (tenant, event id, line) and wait for every acknowledgement."""
        seen = self.already_processed([(t, e) for t, e, _ in chunk])
        for (tenant, event_id, line), processed in zip(chunk, seen, strict=True):
            ident = (tenant, event_id)
            if processed or ident in self.recent:
                counts.duplicates += 1
                continue
            self.recent[ident] = None
            if len(self.recent) > RECENT_IDS:
                self.recent.popitem(last=False)
            counts.accepted += 1
            if self.producer is None:
                continue
            while True:
                try:
                    self.producer.produce(self.topic, value=line, key=tenant.encode(), on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        if self.producer is not None and (self.producer.flush(60) or self.errors):
            raise ImportFailed(f"the broker did not acknowledge: {self.errors[:3] or 'flush timed out'}")

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_import(
    settings: Settings,
    path: Path,
    dry_run: bool = False,
    checkpoint: Path | None = None,
    restart: bool = False,
    chunk_lines: int = CHUNK_LINES,
    progress: bool | None = None,
) -> int:
    """Exit status: 0 all lines accepted or duplicates, 1 some rejected, 2 bad usage or a
    checkpoint of another file, 3 the broker failed, 130 interrupted (resume by re-running)."""
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    ensure_log_output()
    cp_path = checkpoint or default_checkpoint(path)
    head, size = file_head(path), path.stat().st_size
    counts, offset, line_no = Counts(), 0, 1
    state = None if (restart or dry_run) else read_checkpoint(cp_path)
    if state is not None:
        if state.get("head") != head or int(state.get("offset", -1)) > size:
            print(f"error: checkpoint {cp_path} belongs to another file; pass --restart to ignore it", file=sys.stderr)
            return 2
        offset, line_no = int(state["offset"]), int(state["line"])
        saved = state.get("counts", {})
        counts = Counts(
            int(saved.get("accepted", 0)),
            int(saved.get("rejected", 0)),
            int(saved.get("duplicates", 0)),
            list(saved.get("rejected_lines", [])),
        )
        print(f"resuming {path} at line {line_no} (byte {offset}) from {cp_path}", file=sys.stderr)

    importer = Importer(settings, dry_run)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    done_offset, done_line = offset, line_no
    chunk: list[tuple[str, str, bytes]] = []
    status = 0
    bar = Progress(f"import {path.name}", size, "B", initial=offset, bar=progress)

    def save() -> None:
        if not dry_run:
            write_checkpoint(
                cp_path,
                {"file": str(path), "head": head, "offset": done_offset, "line": done_line, "counts": counts.as_dict()},
            )

    try:
        pending_end, pending_line = offset, line_no
        for line in read_lines(path, offset, line_no):
            result = prepare_line(line.raw)
            if isinstance(result, tuple):
                event, payload = result
                chunk.append((event.tenant_id, event.event_id, payload))
            elif result is not None:
                counts.rejected += 1
                if len(counts.rejected_lines) < SHOWN_REJECTS:
                    counts.rejected_lines.append(line.number)
                print(f"{path}:{line.number}: invalid event: {result}", file=sys.stderr)
            pending_end, pending_line = line.end, line.number + 1
            if len(chunk) >= chunk_lines:
                importer.publish_chunk(chunk, counts)
                chunk = []
                bar.update(pending_end - done_offset, accepted=counts.accepted, rejected=counts.rejected)
                done_offset, done_line = pending_end, pending_line
                save()
        importer.publish_chunk(chunk, counts)
        chunk = []
        bar.update(pending_end - done_offset, accepted=counts.accepted, rejected=counts.rejected)
        done_offset, done_line = pending_end, pending_line
    except KeyboardInterrupt:
        save()
        bar.close()
        print(
            f"interrupted: lines before {done_line} are published and acknowledged; "
            f"run the same command again to resume ({cp_path})",
            file=sys.stderr,
        )
        importer.close()
        return 130
    except ImportFailed as exc:
        save()
        bar.close()
        print(f"error: {exc}; run the same command again to resume ({cp_path})", file=sys.stderr)
        importer.close()
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    importer.close()
    if not dry_run:
        remove_checkpoint(cp_path)
    if counts.rejected:
        status = 1
    verb = "would publish" if dry_run else "published"
    shown = ", ".join(str(n) for n in counts.rejected_lines[:20]) + (" …" if counts.rejected > 20 else "")
    print(
        f"{verb} {counts.accepted} events to {settings.topic_events} (accepted {counts.accepted}); "
        f"{counts.rejected} invalid lines (rejected{f': lines {shown}' if counts.rejected else ''}); "
        f"{counts.duplicates} duplicates"
    )
    return status
