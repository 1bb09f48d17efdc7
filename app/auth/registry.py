"""API keys in the system of record: `AI_MEMORY.API_KEYS` in the warehouse (migration V004).

Redis is the cache the gateway reads on every request (app.auth.apikeys.ApiKeyStore); this table
is what survives a Redis wipe. `memstream keys create/revoke` write here first, then Redis; a
gateway that finds no record in Redis reads it from here (bounded, negatively cached), and
`memstream rebuild` copies every key back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.auth.apikeys import ApiKeyRecord
from app.auth.errors import AuthUnavailable
from app.auth.principal import parse_roles

Query = Callable[[str, Sequence[Any]], Awaitable[list[dict[str, Any]]]]
COLUMNS = (
    "key_id",
    "tenant_id",
    "roles",
    "agent_id",
    "name",
    "key_hash",
    "hash_alg",
    "created_at",
    "expires_at",
    "revoked",
    "revoked_at",
)


def to_row(record: ApiKeyRecord) -> list[Any]:
    return [
        record.prefix,
        record.tenant_id,
        ",".join(sorted(r.value for r in record.roles)),
        record.agent_id,
        record.name,
        record.key_hash,
        record.hash_alg,
        record.created_at,
        record.expires_at,
        record.revoked,
        record.revoked_at,
    ]


def from_row(row: dict[str, Any]) -> ApiKeyRecord:
    """A row (lower-case column names) as the record; anything but an explicit false is revoked."""
    expires, revoked_at = row.get("expires_at"), row.get("revoked_at")
    return ApiKeyRecord(
        prefix=str(row["key_id"]),
        tenant_id=str(row["tenant_id"]),
        roles=parse_roles(str(row.get("roles") or "")),
        key_hash=str(row["key_hash"]),
        hash_alg=str(row["hash_alg"]),
        created_at=float(row.get("created_at") or 0),
        agent_id=row.get("agent_id") or None,
        name=row.get("name") or None,
        expires_at=float(expires) if expires is not None else None,
        revoked=row.get("revoked") is not False,
        revoked_at=float(revoked_at) if revoked_at is not None else None,
    )


class KeyRegistry:
    """Thin adapter over a warehouse query function (app.gateway.warehouse.Warehouse.query: a
    thread pool, a timeout and a circuit breaker)."""

    def __init__(self, query: Query, schema: str) -> None:
        self._query = query
        self.table = f"{schema}.API_KEYS"

    async def query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        try:
            return await self._query(sql, params)
        except Exception as exc:  # the warehouse adapter's own error types stay out of app.auth
            raise AuthUnavailable("the credential store is unavailable", reason="key_store") from exc

    async def insert(self, record: ApiKeyRecord) -> None:
        marks = ", ".join(["?"] * len(COLUMNS))
        await self.query(f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({marks})", to_row(record))

    async def get(self, prefix: str) -> ApiKeyRecord | None:
        rows = await self.query(f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE key_id = ?", [prefix])
        return from_row(rows[0]) if rows else None

    async def revoke(self, prefix: str, at: float) -> None:
        await self.query(
            f"UPDATE {self.table} SET revoked = TRUE, revoked_at = ? WHERE key_id = ? AND revoked = FALSE",
            [at, prefix],
        )

    async def all(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        where, params = ("WHERE tenant_id = ?", [tenant]) if tenant else ("", [])
        rows = await self.query(f"SELECT {', '.join(COLUMNS)} FROM {self.table} {where} ORDER BY key_id", params)
        return [from_row(r) for r in rows]
