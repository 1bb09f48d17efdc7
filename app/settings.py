"""The one settings object: environment (prefix MEMSTREAM_), `.env`, and `*_FILE` secrets."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
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
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

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
    ingest_batch_within_s: float = Field(0.05, gt=0)

    # Warehouse sink batching
    sink_batch_max_rows: int = Field(5000, ge=1)
    sink_batch_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    sink_batch_within_s: float = Field(1.0, gt=0)

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    gateway_batch_max_items: int = Field(100, ge=1)
    search_candidate_pool: int = Field(2000, ge=10)
    wait_visible_timeout_s: float = Field(5.0, gt=0)
    dev_tenant_header: str = "X-Memstream-Dev-Tenant"
    dev_tenant_header_enabled: bool = False

    # Worker observability
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

    @field_validator("hotset_ttl_seconds")
    @classmethod
    def _merge_ttls(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {t.value for t in MemoryType}
        if unknown:
            raise ValueError(f"unknown memory types in hotset_ttl_seconds: {sorted(unknown)}")
        if any(v <= 0 for v in value.values()):
            raise ValueError("hotset TTLs must be positive")
        return {**DEFAULT_TTLS, **value}

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
