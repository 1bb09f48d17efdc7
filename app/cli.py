"""The `memstream` command line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app import devstack
from app.auth.cli import add_keys_parser

if TYPE_CHECKING:
    from app.settings import Settings


def _settings() -> Settings:
    from app.settings import get_settings

    return get_settings()


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker import AGENTS, run_worker

    agents = tuple(a.strip() for a in args.agents.split(",") if a.strip())
    unknown = set(agents) - set(AGENTS)
    if unknown or not agents:
        print(f"error: --agents takes a comma-separated subset of {', '.join(AGENTS)}", file=sys.stderr)
        return 2
    run_worker(_settings(), agents)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from app.gateway.server import run_gateway

    run_gateway(_settings(), args.cert, args.key)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import logging

    from app.migrate import MigrationError, run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("snowflake.connector").setLevel(logging.ERROR)
    try:
        report = run(_settings(), directory=args.dir, dry_run=args.dry_run, wait_s=args.wait)
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


def dev_env(kafka_port: int, redis_port: int, snowflake_port: int, gateway_port: int) -> dict[str, str]:
    lo = devstack.LOOPBACK
    return {
        "MEMSTREAM_ENV": "development",
        "MEMSTREAM_KAFKA_BOOTSTRAP": f"{lo}:{kafka_port}",
        "MEMSTREAM_REDIS_URL": f"redis://{lo}:{redis_port}/0",
        "MEMSTREAM_SNOWFLAKE_HOST": lo,
        "MEMSTREAM_SNOWFLAKE_PORT": str(snowflake_port),
        "MEMSTREAM_SNOWFLAKE_PROTOCOL": "http",
        "MEMSTREAM_GATEWAY_HOST": lo,
        "MEMSTREAM_GATEWAY_PORT": str(gateway_port),
        "MEMSTREAM_DEV_TENANT_HEADER_ENABLED": "true",
    }


class DevStack:
    """Broker, Redis, warehouse emulator and memstream processes on loopback, stopped together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.data_dir: Path = args.data_dir
        self.log_dir = self.data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dev_env(args.kafka_port, args.redis_port, args.snowflake_port, args.gateway_port)
        self.services = [
            devstack.kafka_service(args.kafka_port, self.log_dir),
            devstack.redis_service(args.redis_port, self.log_dir),
            devstack.warehouse_service(args.snowflake_port, self.data_dir / "warehouse", self.log_dir),
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, with_gateway: bool = True) -> None:
        for svc in self.services:
            print(f"starting {svc.name} on {devstack.LOOPBACK}:{svc.port}", flush=True)
            svc.start()
        env = {**os.environ, **self.env}
        self.run_memstream(["migrate"], env)
        commands = [["worker"]] + ([["gateway"]] if with_gateway else [])
        for argv in commands:
            log = open(self.log_dir / f"{argv[0]}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen([sys.executable, "-m", "app.cli", *argv], env=env, stdout=log, stderr=log)
            )
        if with_gateway:
            devstack.wait_for_port(int(self.env["MEMSTREAM_GATEWAY_PORT"]), 60, self.procs[-1])

    def run_memstream(self, argv: list[str], env: dict[str, str]) -> None:
        subprocess.run([sys.executable, "-m", "app.cli", *argv], env=env, check=True)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for svc in reversed(self.services):
            svc.stop()


def add_dev_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka-port", type=int, default=19092)
    p.add_argument("--redis-port", type=int, default=16379)
    p.add_argument("--snowflake-port", type=int, default=18085)
    p.add_argument("--gateway-port", type=int, default=8080)
    p.add_argument("--data-dir", type=Path, default=Path(".memstream"))


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    # SIGTERM (kill, a supervisor) would end Python without the `finally`, orphaning the broker,
    # Redis and the emulator; a shell's background job starts with SIGINT ignored.
    try:
        devstack.require_local_stack()
        stack = DevStack(args)
    except devstack.MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    try:
        stack.start()
        env = stack.env
        print("memstream dev stack is up (Ctrl-C stops everything):", flush=True)
        for k in ("MEMSTREAM_KAFKA_BOOTSTRAP", "MEMSTREAM_REDIS_URL"):
            print(f"  {k}={env[k]}")
        print(f"  warehouse: http://{devstack.LOOPBACK}:{env['MEMSTREAM_SNOWFLAKE_PORT']}")
        print(f"  gateway:   http://{devstack.LOOPBACK}:{env['MEMSTREAM_GATEWAY_PORT']}/docs")
        print(f"  logs:      {stack.log_dir}/")
        while all(p.poll() is None for p in stack.procs):
            time.sleep(0.5)
        print("a memstream process exited; see the logs", file=sys.stderr)
        return 1
    except devstack.MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        stack.stop()


def cmd_import(args: argparse.Namespace) -> int:
    from app.importer import run_import

    return run_import(_settings(), args.file, args.dry_run, args.checkpoint, args.restart, args.chunk_lines)


def cmd_rebuild(args: argparse.Namespace) -> int:
    from app.rebuild import run_rebuild

    checkpoint = args.checkpoint or Path(f"memstream-rebuild{'.' + args.tenant if args.tenant else ''}.checkpoint")
    return run_rebuild(_settings(), args.tenant, checkpoint, args.restart, args.reindex)


def cmd_mcp(args: argparse.Namespace) -> int:
    from app.mcp_server import run_mcp

    return run_mcp(_settings(), args.transport, args.host, args.port)


def _subject(args: argparse.Namespace) -> tuple[str, object] | None:
    from app.erasure import subject_from_args

    try:
        return args.tenant, subject_from_args(args.user_id, args.agent_id, args.session_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_erase(args: argparse.Namespace) -> int:
    import orjson

    from app.erasure import Subject, run_erase

    found = _subject(args)
    if found is None:
        return 2
    tenant, subject = found
    assert isinstance(subject, Subject)
    report = run_erase(_settings(), tenant, subject, args.wait)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.erasure import Subject, run_export

    found = _subject(args)
    if found is None:
        return 2
    tenant, subject = found
    assert isinstance(subject, Subject)
    if args.out is None:
        n = run_export(_settings(), tenant, subject, sys.stdout.buffer)
    else:
        with open(args.out, "wb") as out:
            n = run_export(_settings(), tenant, subject, out)
    print(f"exported {n} memories", file=sys.stderr)
    return 0


def _add_subject_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True)
    p.add_argument("--user-id")
    p.add_argument("--agent-id")
    p.add_argument("--session-id")


def cmd_backup(args: argparse.Namespace) -> int:
    from app.backup import run_export, run_restore

    if args.backup_command == "export":
        return run_export(_settings(), args.out, args.tenant, args.as_of, args.gzip)
    return run_restore(_settings(), args.dir, args.tenant, not args.no_rebuild)


def add_backup_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="export memories to JSON Lines files, restore them (docs/backup.md)")
    bs = p.add_subparsers(dest="backup_command", required=True)
    e = bs.add_parser("export", help="stream every memory (or a tenant's) as of a time to DIR")
    e.add_argument("--tenant", help="only this tenant (default: all)")
    e.add_argument("--as-of", help="the versions current at this time (ISO 8601; default: now)")
    e.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the files and manifest.json")
    e.add_argument("--gzip", action="store_true", help="gzip each file (.jsonl.gz)")
    r = bs.add_parser("restore", help="merge an export back into the warehouse and refill the hotset")
    r.add_argument("dir", type=Path, metavar="DIR")
    r.add_argument("--tenant", help="only this tenant of the backup")
    r.add_argument("--no-rebuild", action="store_true", help="leave the hotset alone")
    p.set_defaults(func=cmd_backup)


def cmd_reembed(args: argparse.Namespace) -> int:
    from app.reembed import run_reembed

    return run_reembed(_settings(), args.tenant)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memstream", description="Event-driven memory for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dev", help="run the whole stack on loopback with embedded defaults")
    add_dev_flags(p)
    p.set_defaults(func=cmd_dev)
    p = sub.add_parser("worker", help="run the Faust worker against the configured services")
    p.add_argument(
        "--agents",
        default="ingest,warehouse,embed",
        help="which agents to run (default: ingest,warehouse,embed; split them to scale separately)",
    )
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("migrate", help="apply pending warehouse migrations (deploy/snowflake/V*.sql)")
    p.add_argument("--dir", type=Path, default=None, help="migrations directory (default: deploy/snowflake)")
    p.add_argument("--dry-run", action="store_true", help="list pending migrations, apply nothing")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the warehouse to answer")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("gateway", help="serve the HTTP API v2 (uvicorn) on the configured host and port")
    p.add_argument("--cert", help="serve HTTPS (TLS >= 1.2) with this PEM certificate (chain)")
    p.add_argument("--key", help="the certificate's PEM private key")
    p.set_defaults(func=cmd_gateway)
    add_keys_parser(sub)
    p = sub.add_parser("rebuild", help="refill the Redis hotset from the warehouse (cold-cache recovery)")
    p.add_argument("--tenant", help="only this tenant (default: all)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="resume file (default: memstream-rebuild[.TENANT].checkpoint here; removed when done)",
    )
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint, start from the beginning")
    p.add_argument(
        "--reindex", action="store_true", help="also rewrite memories the hotset holds at the same version (new index)"
    )
    p.set_defaults(func=cmd_rebuild)
    p = sub.add_parser("reembed", help="re-embed a tenant's memories with the configured model (after a model change)")
    p.add_argument("--tenant", required=True, help="the tenant to re-embed")
    p.set_defaults(func=cmd_reembed)
    p = sub.add_parser("import", help="publish memory events from a JSON Lines file")
    p.add_argument("file", type=Path, metavar="FILE.jsonl")
    p.add_argument("--dry-run", action="store_true", help="validate only, publish nothing")
    p.add_argument(
        "--checkpoint", type=Path, help="resume file (default: FILE.jsonl.checkpoint; removed when the import ends)"
    )
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint, start from line 1")
    p.add_argument(
        "--chunk-lines", type=int, default=2000, help="lines per acknowledged chunk: the checkpoint's granularity"
    )
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("mcp", help="serve memstream as MCP tools (stdio, or streamable HTTP) through the gateway")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (loopback by default)")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (endpoint /mcp)")
    p.set_defaults(func=cmd_mcp)
    p = sub.add_parser("erase", help="erase everything held about a user, agent or session (GDPR art. 17)")
    _add_subject_flags(p)
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the hotset tombstones (0: no wait)")
    p.set_defaults(func=cmd_erase)
    p = sub.add_parser("export", help="export everything held about a user, agent or session as JSON Lines")
    _add_subject_flags(p)
    p.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    p.set_defaults(func=cmd_export)

    add_backup_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
