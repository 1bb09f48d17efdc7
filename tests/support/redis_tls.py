"""Redis over TLS for tests: a CA and a server certificate (127.0.0.1) made at session start, and
a redis-server listening only on its TLS port."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app import devstack


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(tmp: Path, host: str = "127.0.0.1") -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memstream test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memstream test redis")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tmp.mkdir(parents=True, exist_ok=True)
    pki = Pki(tmp / "ca.pem", tmp / "redis.pem", tmp / "redis.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_key_pem(key))
    return pki


def tls_redis_service(port: int, pki: Pki, log_dir: Path) -> devstack.Service:
    """TLS only (`--port 0`); client certificates optional (`--tls-auth-clients optional`)."""
    argv = [
        devstack.redis_binary(),
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(pki.cert),
        "--tls-key-file",
        str(pki.key),
        "--tls-ca-cert-file",
        str(pki.ca),
        "--tls-auth-clients",
        "optional",
        "--bind",
        devstack.LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    return devstack.Service("redis-tls", argv, port, log_path=log_dir / "redis-tls.log")
