"""Render the configuration reference in README.md from the Settings model (`make docs`).

A test fails when a setting has no description here or the README block is out of date.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings

DESCRIPTIONS: dict[str, str] = {
    "env": "`development` enables development conveniences (the dev tenant header); `production` refuses them",
    "log_level": "log level of worker and gateway",
    "log_json": "structured JSON logs",
    "kafka_bootstrap": "Kafka bootstrap servers, comma separated",
    "kafka_security_protocol": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    "kafka_sasl_mechanism": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    "kafka_sasl_username": "SASL user",
    "kafka_sasl_password": "SASL password (secret; `_FILE` supported)",
    "kafka_ssl_cafile": "CA bundle for Kafka TLS",
    "topic_prefix": "prefix for every topic name (`memory.events` becomes `<prefix>memory.events`)",
    "topic_partitions": "partitions of each topic created by memstream (max useful workers)",
    "topic_replication": "replication factor of created topics",
    "worker_group": "consumer group of the ingest agent",
    "warehouse_group": "consumer group of the warehouse sink",
    "kafka_session_timeout_s": "consumer session timeout (group joins take about half of it)",
    "kafka_heartbeat_s": "consumer heartbeat interval",
    "redis_url": "Redis URL; `rediss://` for TLS (secret: may hold a password)",
    "redis_password": "Redis password (secret)",
    "redis_max_connections": "connection pool size per process",
    "redis_timeout_s": "socket connect/read timeout",
    "snowflake_account": "Snowflake account identifier",
    "snowflake_user": "Snowflake user",
    "snowflake_password": "password auth (secret); ignored when a private key file is set",
    "snowflake_private_key_file": "PEM private key for key-pair (JWT) auth",
    "snowflake_private_key_passphrase": "passphrase of that key (secret)",
    "snowflake_host": "host override (the local emulator); empty for real Snowflake",
    "snowflake_port": "port override; empty for real Snowflake",
    "snowflake_protocol": "`https` for real Snowflake, `http` for the local emulator",
    "snowflake_database": "database holding schema `AI_MEMORY`",
    "snowflake_schema": "schema of MEMORY_RECORDS and AUDIT_LOGS",
    "snowflake_warehouse": "virtual warehouse",
    "snowflake_role": "role",
    "snowflake_network_timeout_s": "connector network and login timeout",
    "hotset_ttl_seconds": "per-type hotset TTLs as JSON, merged over the defaults",
    "dedupe_window_seconds": "same normalized text in the same scope within this event-time window is a duplicate",
    "state_ttl_seconds": "how long event ids, dedupe entries and tombstones are remembered (replay horizon)",
    "ingest_batch_max": "ingest batch size (messages)",
    "ingest_batch_within_s": "ingest batch time limit",
    "sink_batch_max_rows": "warehouse batch: max rows",
    "sink_batch_max_bytes": "warehouse batch: max bytes",
    "sink_batch_within_s": "warehouse batch: max wait",
    "gateway_host": "gateway bind address",
    "gateway_port": "gateway port",
    "gateway_max_body_bytes": "request body limit (413 above it)",
    "gateway_batch_max_items": "max events per batch request",
    "search_candidate_pool": "max candidates a search examines in the hotset",
    "gateway_doc_cache_size": (
        "hotset values kept parsed per gateway process (about 2 KB each; values over 4 KB are never kept; "
        "0 = parse every read)"
    ),
    "gateway_fast_reads": ("serve retrieve, search and context without FastAPI's per-request machinery (same checks)"),
    "wait_visible_timeout_s": "bound of `?wait=visible` (504 after it)",
    "dev_tenant_header": "development-only tenant header",
    "dev_tenant_header_enabled": "accept the development tenant header (never in production)",
    "jwt_hs256_secret": "HS256 secret for bearer tokens (secret)",
    "jwt_jwks_file": "JWKS file with RS256/ES256 public keys",
    "jwt_jwks_url": "JWKS URL (fetched with a timeout, cached)",
    "jwt_jwks_timeout_s": "JWKS fetch timeout",
    "jwt_jwks_cache_s": "JWKS cache lifetime",
    "jwt_algorithms": "accepted JWT algorithms (JSON list)",
    "jwt_issuer": "required `iss`",
    "jwt_audience": "required `aud`",
    "jwt_leeway_s": "clock skew allowed on `exp`/`nbf`",
    "jwt_tenant_claim": "claim holding the tenant id",
    "jwt_roles_claim": "claim holding the roles",
    "jwt_agent_claim": "claim binding a token to one agent",
    "api_key_pepper": "server-side pepper for API key hashes (secret)",
    "rate_limit_per_key_per_minute": "requests per minute per credential (0 = unlimited)",
    "rate_limit_per_tenant_per_minute": "requests per minute per tenant (0 = unlimited)",
    "rate_limit_burst_factor": "bucket size as a multiple of the per-minute rate",
    "request_signing_secret": "HMAC secret for signed requests (secret)",
    "request_signing_required": "refuse unsigned requests",
    "request_signing_window_s": "accepted clock difference / replay window for signatures",
    "tls_cert_file": "gateway HTTPS certificate (PEM)",
    "tls_key_file": "gateway HTTPS private key (PEM)",
    "tls_key_password": "password of that key (secret)",
    "tls_min_version": "minimum TLS version",
    "tls_ciphers": "TLS 1.2 cipher list",
    "metrics_host": "worker metrics bind address",
    "metrics_port": "worker Prometheus port (unset: no endpoint)",
}

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def _default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(set)" if value.get_secret_value() else ""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        desc = DESCRIPTIONS.get(name) or field.description or ""
        shown = _default(default).replace("|", "\\|")
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {desc} |"
            if shown
            else f"| `{ENV_PREFIX}{name.upper()}` | | {desc} |"
        )
    return "\n".join(rows)


def update_readme(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    new = re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{render()}\n{END}", text, flags=re.S)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    update_readme(Path(__file__).resolve().parents[1] / "README.md")
