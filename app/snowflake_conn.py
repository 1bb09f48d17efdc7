"""Snowflake connections from settings: password or key-pair auth, optional host/port/protocol
override (the local emulator), role, warehouse, database and schema. Same code for production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import snowflake.connector
from snowflake.connector import SnowflakeConnection

from app.settings import Settings


def connect_kwargs(settings: Settings, with_schema: bool = True) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "account": settings.snowflake_account,
        "user": settings.snowflake_user,
        "database": settings.snowflake_database,
        "network_timeout": settings.snowflake_network_timeout_s,
        "login_timeout": settings.snowflake_network_timeout_s,
        "client_session_keep_alive": False,
        "session_parameters": {"QUERY_TAG": "memstream"},
        # Otherwise the connector probes cloud metadata endpoints (EC2, Azure, GCP) at connect to
        # report its platform: traffic to addresses nobody configured.
        "platform_detection_timeout_seconds": 0.0,
    }
    if with_schema:
        kw["schema"] = settings.snowflake_schema
    if settings.snowflake_host:
        kw["host"] = settings.snowflake_host
    if settings.snowflake_port:
        kw["port"] = settings.snowflake_port
    kw["protocol"] = settings.snowflake_protocol
    if settings.snowflake_warehouse:
        kw["warehouse"] = settings.snowflake_warehouse
    if settings.snowflake_role:
        kw["role"] = settings.snowflake_role
    if settings.snowflake_private_key_file:
        kw["private_key"] = _load_private_key(settings)
        kw["authenticator"] = "SNOWFLAKE_JWT"
    elif settings.snowflake_password is not None:
        kw["password"] = settings.snowflake_password.get_secret_value()
    return kw


def _load_private_key(settings: Settings) -> bytes:
    from cryptography.hazmat.primitives import serialization

    assert settings.snowflake_private_key_file
    pem = Path(settings.snowflake_private_key_file).read_bytes()
    passphrase = (
        settings.snowflake_private_key_passphrase.get_secret_value().encode()
        if settings.snowflake_private_key_passphrase
        else None
    )
    key = serialization.load_pem_private_key(pem, password=passphrase)
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def connect(settings: Settings, with_schema: bool = True) -> SnowflakeConnection:
    return snowflake.connector.connect(**connect_kwargs(settings, with_schema))
