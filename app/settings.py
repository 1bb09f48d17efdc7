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

    env: Literal["development", "production"] = "production"
    log_level: str = "INFO"
    log_json: bool = False

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    topic_prefix: str = ""
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    worker_group: str = "memstream-worker"
    warehouse_group: str = "memstream-warehouse"
    kafka_session_timeout_s: float = Field(6.0, gt=0)
    kafka_heartbeat_s: float = Field(1.0, gt=0)

    # Redis
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_password: SecretStr | None = None
    redis_max_connections: int = Field(20, ge=1)
    redis_timeout_s: float = Field(2.0, gt=0)

    # Snowflake (the real connector; a local fakesnow server in development)
    snowflake_account: str = "memstream"
    snowflake_user: str = "memstream"
    snowflake_password: SecretStr | None = SecretStr("memstream")
    snowflake_private_key_file: str | None = None
    snowflake_private_key_passphrase: SecretStr | None = None
    snowflake_host: str | None = "127.0.0.1"
    snowflake_port: int | None = 8085
    snowflake_protocol: Literal["http", "https"] = "http"
    snowflake_database: str = "MEMSTREAM"
    snowflake_schema: str = "AI_MEMORY"
    snowflake_warehouse: str | None = None
    snowflake_role: str | None = None
    snowflake_network_timeout_s: int = Field(5, ge=1)

    # Pipeline policies
    hotset_ttl_seconds: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_TTLS))
    dedupe_window_seconds: int = Field(3600, ge=0)
    state_ttl_seconds: int = Field(30 * 86400, ge=60)
    ingest_batch_max: int = Field(1000, ge=1)
    ingest_batch_within_s: float = Field(0.02, gt=0)

    # Warehouse sink batching
    sink_batch_max_rows: int = Field(5000, ge=1)
    sink_batch_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    sink_batch_within_s: float = Field(1.0, gt=0)

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    gateway_batch_max_items: int = Field(100, ge=1)
    search_candidate_pool: int = Field(500, ge=10)
    gateway_doc_cache_size: int = Field(20_000, ge=0)
    gateway_fast_reads: bool = True
    wait_visible_timeout_s: float = Field(5.0, gt=0)
    dev_tenant_header: str = "X-Memstream-Dev-Tenant"
    dev_tenant_header_enabled: bool = False

    # Security (docs/security.md). JWT: HS256 with a shared secret and/or RS256/ES256 with keys
    # from a JWKS file or URL; each algorithm is only ever checked against its own kind of key.
    jwt_hs256_secret: SecretStr | None = None
    jwt_jwks_file: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_timeout_s: float = Field(default=3.0, gt=0)
    jwt_jwks_cache_s: float = Field(default=300.0, ge=0)
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256", "RS256", "ES256"])
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=600)
    jwt_tenant_claim: str = "tenant_id"
    jwt_roles_claim: str = "roles"
    jwt_agent_claim: str = "agent_id"
    # API keys are stored as HMAC-SHA256(pepper, key) when a pepper is set, else SHA-256(key).
    api_key_pepper: SecretStr | None = None
    # Token buckets shared by all gateway instances through Redis; 0 disables a bucket.
    rate_limit_per_key_per_minute: int = Field(default=600, ge=0)
    rate_limit_per_tenant_per_minute: int = Field(default=3000, ge=0)
    rate_limit_burst_factor: float = Field(default=1.0, ge=1.0, le=60.0)
    # Optional HMAC request signing for machine producers.
    request_signing_secret: SecretStr | None = None
    request_signing_required: bool = False
    request_signing_window_s: int = Field(default=300, ge=1, le=3600)
    # Gateway HTTPS (TLS >= 1.2).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_key_password: SecretStr | None = None
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    tls_ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!RC4:!3DES"

    # Worker observability
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

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
