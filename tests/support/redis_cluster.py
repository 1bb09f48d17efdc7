"""A three-master Redis Cluster on loopback: redis-server processes in cluster mode, slots assigned
with CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET, ready when every node says cluster_state:ok."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from app import devstack
from tests.support.redis_tls import Pki

SLOTS = 16384


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Contiguous, covering slot ranges, one per master."""
    step = SLOTS // masters
    return [(i * step, SLOTS - 1 if i == masters - 1 else (i + 1) * step - 1) for i in range(masters)]


def node_service(port: int, bus_port: int, data: Path, log_dir: Path, tls: Pki | None = None) -> devstack.Service:
    data.mkdir(parents=True, exist_ok=True)
    # With TLS: clients and the cluster bus speak TLS only; each node presents the same
    # certificate to clients and to the other nodes.
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-auth-clients", "optional"]
        listen += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca)]
    argv = [
        devstack.redis_binary(),
        *listen,
        "--bind",
        devstack.LOOPBACK,
        "--cluster-enabled",
        "yes",
        "--cluster-port",  # explicit bus port: port + 10000 may be taken or out of range
        str(bus_port),
        "--cluster-config-file",
        str(data / "nodes.conf"),
        "--cluster-node-timeout",
        "2000",
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    return devstack.Service(f"redis-cluster-{port}", argv, port, log_path=log_dir / f"redis-cluster-{port}.log")


def node_client(port: int, tls: Pki | None) -> redis.Redis:
    """A plain client of one node (cluster commands only)."""
    opts: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls is not None else {}
    return redis.Redis(host=devstack.LOOPBACK, port=port, decode_responses=True, **opts)


def _ready(ports: list[int], tls: Pki | None) -> bool:
    for port in ports:
        with node_client(port, tls) as c:
            info = c.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text or f"cluster_known_nodes:{len(ports)}" not in text:
                return False
    return True


def start(tmp: Path, masters: int = 3, deadline_s: float = 30.0, tls: Pki | None = None) -> list[devstack.Service]:
    """Start and join the nodes; the first node's port is the client's seed."""
    nodes: list[devstack.Service] = []
    try:
        for i in range(masters):
            svc = node_service(devstack.free_port(), devstack.free_port(), tmp / f"node{i}", tmp, tls)
            nodes.append(svc.start())
        buses = [int(svc.argv[svc.argv.index("--cluster-port") + 1]) for svc in nodes]
        for svc, (lo, hi) in zip(nodes, slot_ranges(masters), strict=True):
            with node_client(svc.port, tls) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        with node_client(nodes[0].port, tls) as seed:
            for svc, bus in zip(nodes[1:], buses[1:], strict=True):
                seed.execute_command("CLUSTER", "MEET", devstack.LOOPBACK, svc.port, bus)
        ports = [svc.port for svc in nodes]
        deadline = time.monotonic() + deadline_s
        while not _ready(ports, tls):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster on {ports} not ready within {deadline_s}s")
            time.sleep(0.05)
        return nodes
    except BaseException:
        stop(nodes)
        raise


def stop(nodes: list[devstack.Service]) -> None:
    for svc in nodes:
        svc.stop()
