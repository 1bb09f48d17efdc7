"""`memstream keys create|list|revoke`: tenant API keys from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from app.auth.apikeys import ApiKeyRecord, ApiKeyStore, key_prefix, parse_duration
from app.auth.errors import AuthUnavailable
from app.auth.principal import Role


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _show(record: ApiKeyRecord) -> dict[str, Any]:
    out = record.public()
    for k in ("created_at", "expires_at", "revoked_at"):
        v = out[k]
        out[k] = _iso(v) if isinstance(v, float) else None
    return out


async def _run(args: argparse.Namespace) -> int:
    from app.auth.registry import KeyRegistry
    from app.auth.secrets import SecretPair
    from app.gateway.warehouse import Warehouse
    from app.redis_client import create_redis
    from app.settings import get_settings

    settings = get_settings()
    redis = create_redis(settings)
    warehouse = Warehouse(settings, max_workers=1)
    # The warehouse's API_KEYS table is the system of record; Redis is its cache.
    registry = KeyRegistry(warehouse.query, settings.snowflake_schema)
    store = ApiKeyStore(redis, registry=registry, peppers=SecretPair.from_settings(settings, "api_key_pepper"))
    try:
        if args.keys_command == "create":
            expires = parse_duration(args.expires_in) if args.expires_in else None
            key, record = await store.create(
                args.tenant, frozenset(Role(r) for r in args.role), args.agent, args.name, expires
            )
            # The only time the key exists outside its holder: stdout, never a log.
            print(json.dumps({"api_key": key, **_show(record)}, indent=2))
            print("store this key now: it cannot be shown again", file=sys.stderr)
            return 0
        if args.keys_command == "list":
            for record in await store.list(args.tenant):
                print(json.dumps(_show(record)))
            return 0
        # The full key is accepted too: its public prefix is the id.
        revoked = await store.revoke(key_prefix(args.key_id) or args.key_id)
        if revoked is None:
            print(f"error: no API key {args.key_id!r}", file=sys.stderr)
            return 1
        print(json.dumps(_show(revoked)))
        return 0
    finally:
        warehouse.close()
        await redis.aclose()


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthUnavailable as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        print(f"error: {exc.message}{cause} (run `memstream migrate` first?)", file=sys.stderr)
        return 1


def add_keys_parser(sub: Any) -> None:
    """Register `keys` on the main parser's subcommands."""
    p = sub.add_parser("keys", help="create, list and revoke tenant API keys")
    ks = p.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="issue a key (printed once) for a tenant")
    c.add_argument("--tenant", required=True)
    c.add_argument("--role", action="append", required=True, choices=[r.value for r in Role], help="repeat for several")
    c.add_argument("--agent", help="bind the key to one agent id (it can act only as that agent)")
    c.add_argument("--name", help="a label to recognise the key by")
    c.add_argument("--expires-in", help="lifetime, e.g. 30d, 12h, 90m (default: no expiry)")
    lst = ks.add_parser("list", help="list a tenant's keys (never their secrets)")
    lst.add_argument("--tenant", required=True)
    r = ks.add_parser("revoke", help="revoke a key at once")
    r.add_argument("key_id", metavar="KEY_ID", help="the key id shown by create/list (the msk_<id>_ part)")
    p.set_defaults(func=cmd_keys)
