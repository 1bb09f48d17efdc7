"""Kafka TLS/SASL settings reach every Kafka client memstream makes (confluent-kafka config)."""

from __future__ import annotations

from app.kafka import batch_consumer_config
from app.settings import Settings

SECURE = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "memstream",
    "kafka_sasl_password": "pw-123",
    "kafka_ssl_cafile": "/etc/memstream/kafka-ca.pem",
}
EXPECTED = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "memstream",
    "sasl.password": "pw-123",
    "ssl.ca.location": "/etc/memstream/kafka-ca.pem",
}


def test_settings_map_to_librdkafka_keys() -> None:
    conf = Settings(_env_file=None, **SECURE).kafka_client_config()  # type: ignore[arg-type]
    assert {k: conf[k] for k in EXPECTED} == EXPECTED


def test_plaintext_by_default_and_no_empty_security_keys() -> None:
    conf = Settings(_env_file=None).kafka_client_config()
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in conf)


def test_batch_consumers_carry_them() -> None:
    conf = batch_consumer_config(Settings(_env_file=None, **SECURE), "g")  # type: ignore[arg-type]
    assert {k: conf[k] for k in EXPECTED} == EXPECTED
