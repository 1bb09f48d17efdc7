"""`memstream migrate`: apply the versioned warehouse migrations in `deploy/snowflake/V*.sql`.

Each file `V<number>__<name>.sql` is applied once, in version order, and recorded in
`AI_MEMORY.SCHEMA_MIGRATIONS` with a checksum of its text. Re-running applies only what is
pending; an applied file whose text changed is an error (write a new migration instead).

Snowflake DDL commits as it goes, so a migration cannot be rolled back: every statement must be
safe to run twice (`IF NOT EXISTS`), and a migration that failed half-way is simply re-run.
The connector (and the emulator) run one statement per call, so files are split here, by the
connector's own splitter.

Time Travel: a statement that sets `DATA_RETENTION_TIME_IN_DAYS` is applied only where the
warehouse knows that parameter (real Snowflake); elsewhere (the local emulator) it is skipped and
reported, and the migration still counts as applied.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snowflake.connector.util_text import split_statements as connector_split
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from app.settings import Settings

log = logging.getLogger(__name__)

SCHEMA = "AI_MEMORY"  # contract section 5; the migration files name it explicitly
MIGRATIONS_TABLE = f"{SCHEMA}.SCHEMA_MIGRATIONS"
BOOTSTRAP_SQL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version NUMBER(10, 0) NOT NULL,
    name VARCHAR(256) NOT NULL,
    checksum VARCHAR(64) NOT NULL,
    statements NUMBER(10, 0),
    applied_at TIMESTAMP_NTZ NOT NULL,
    PRIMARY KEY (version)
)""",
)
_FILE = re.compile(r"^V(\d+)__([A-Za-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_TIME_TRAVEL = re.compile(r"\bDATA_RETENTION_TIME_IN_DAYS\b", re.IGNORECASE)
CONNECT_RETRY_INITIAL_S = 0.2
CONNECT_RETRY_MAX_S = 5.0


class MigrationError(RuntimeError):
    pass


class ChecksumMismatch(MigrationError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return checksum(self.sql)

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)

    @property
    def label(self) -> str:
        return f"V{self.version:03d}__{self.name}"


@dataclass
class Report:
    database: str
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # dry run: what would be applied
    skipped: list[str] = field(default_factory=list)  # statements this warehouse does not support

    def lines(self) -> list[str]:
        out = [f"warehouse database {self.database}, schema {SCHEMA}"]
        out += [f"  applied   {m}" for m in self.applied]
        out += [f"  pending   {m}" for m in self.pending]
        out += [f"  skipped   {s}" for s in self.skipped]
        if not self.applied and not self.pending:
            last = self.already[-1] if self.already else "none"
            out.append(f"  up to date ({len(self.already)} applied, latest {last})")
        elif self.already:
            out.append(f"  ({len(self.already)} already applied)")
        return out


# ---- pure parts ----------------------------------------------------------------------------------


def default_dir() -> Path:
    """`deploy/snowflake` of this checkout (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[1] / "deploy" / "snowflake"


def checksum(sql: str) -> str:
    # Line endings do not change what a migration does; anything else does.
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def split_statements(sql: str) -> list[str]:
    """The statements of a file, by the connector's own splitter (quotes, `$$` bodies and comments
    respected), comments removed, without the closing `;` and without empty pieces."""
    out = []
    for statement, _is_put_or_get in connector_split(io.StringIO(sql), remove_comments=True):
        text = statement.strip().removesuffix(";").rstrip()
        if text:
            out.append(text)
    return out


def needs_time_travel(statement: str) -> bool:
    """Whether a statement sets Time Travel retention (applied only where the warehouse has it)."""
    return bool(_TIME_TRAVEL.search(statement))


def discover(directory: Path) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist (use --dir)")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("V*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named V<number>__<name>.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {found[version].path.name}, {path.name}")
        found[version] = Migration(version, m.group(2), path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def plan(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """The pending migrations; raises if an applied one changed or vanished.

    `applied` maps version -> (name, checksum) as recorded in SCHEMA_MIGRATIONS.
    """
    by_version = {m.version: m for m in migrations}
    for version, (name, recorded) in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(f"V{version:03d}__{name} is recorded as applied but its file is missing")
        if m.checksum != recorded:
            raise ChecksumMismatch(
                f"{m.path.name} changed after it was applied (checksum {recorded[:12]}… recorded, "
                f"{m.checksum[:12]}… on disk): never edit an applied migration, add a new V file"
            )
    return [m for m in migrations if m.version not in applied]


# ---- I/O -----------------------------------------------------------------------------------------


def _connect_with_wait(settings: Settings, wait_s: float) -> Any:
    """The warehouse may still be starting (`memstream dev`, a k8s job): retry for `wait_s`, with
    exponential backoff (0.2 s doubling to 5 s), never sleeping past the deadline."""
    from snowflake.connector.errors import Error as SnowflakeError

    from app.snowflake_conn import connect

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("warehouse not reachable yet (%s); retrying", exc)

    retrying = Retrying(
        retry=retry_if_exception_type((SnowflakeError, OSError)),
        wait=wait_exponential(multiplier=CONNECT_RETRY_INITIAL_S, max=CONNECT_RETRY_MAX_S),
        stop=stop_before_delay(wait_s),
        before_sleep=warn,
        reraise=True,
    )
    try:
        return retrying(connect, settings, with_schema=False)
    except (SnowflakeError, OSError) as exc:
        raise MigrationError(f"cannot connect to the warehouse: {exc}") from exc


def has_time_travel(cur: Any, database: str) -> bool:
    """Whether the warehouse knows DATA_RETENTION_TIME_IN_DAYS (the emulator answers that SHOW
    PARAMETERS is not implemented)."""
    from snowflake.connector.errors import ProgrammingError

    try:
        rows = cur.execute(f"SHOW PARAMETERS LIKE 'DATA_RETENTION_TIME_IN_DAYS' IN DATABASE {database}").fetchall()
    except ProgrammingError as exc:
        log.info("no Time Travel on this warehouse (%s)", exc)
        return False
    return bool(rows)


def run(
    settings: Settings,
    directory: Path | None = None,
    dry_run: bool = False,
    wait_s: float = 30.0,
    echo: Callable[[str], None] | None = None,
) -> Report:
    """Create the database if missing, then apply every pending migration in order."""
    database = settings.snowflake_database
    if not _IDENT.match(database):
        raise MigrationError(f"invalid database name {database!r}")
    migrations = discover(directory or default_dir())
    report = Report(database=database)
    conn = _connect_with_wait(settings, wait_s)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        cur.execute(f"USE DATABASE {database}")
        for stmt in BOOTSTRAP_SQL:
            cur.execute(stmt)
        rows = cur.execute(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE}").fetchall()
        applied = {int(v): (str(n), str(c)) for v, n, c in rows}
        pending = plan(migrations, applied)
        report.already = [m.label for m in migrations if m.version in applied]
        time_travel: bool | None = None
        for m in pending:
            if dry_run:
                report.pending.append(m.label)
                continue
            statements = m.statements
            for i, stmt in enumerate(statements, 1):
                if needs_time_travel(stmt):
                    if time_travel is None:
                        time_travel = has_time_travel(cur, database)
                    if not time_travel:
                        report.skipped.append(f"{m.label} statement {i} (no Time Travel on this warehouse)")
                        continue
                try:
                    cur.execute(stmt)
                except Exception as exc:
                    raise MigrationError(f"{m.path.name}: statement {i} of {len(statements)} failed: {exc}") from exc
            cur.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, statements, applied_at) "
                "SELECT %s, %s, %s, %s, SYSDATE()",
                (m.version, m.name, m.checksum, len(statements)),
            )
            report.applied.append(m.label)
            if echo:
                echo(f"applied {m.label} ({len(statements)} statements)")
            log.info("applied %s", m.label)
    finally:
        try:
            conn.close()
        except Exception:
            log.debug("closing the migration session failed", exc_info=True)
    if settings.snowflake_schema.upper() != SCHEMA:
        log.warning("MEMSTREAM_SNOWFLAKE_SCHEMA is %s but the migrations create %s", settings.snowflake_schema, SCHEMA)
    return report
