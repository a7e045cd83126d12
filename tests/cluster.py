"""A throwaway three-master Redis Cluster on free ports, for the tests that prove the gateway's
Redis keys and scripts work on one (`redis-server --cluster-enabled yes`, `redis-cli --cluster
create`)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """Ports whose cluster bus ports (port + 10000) are free too, so below 55536."""
    chosen: list[int] = []
    while len(chosen) < n:
        port = random.randint(20000, 40000)
        if port not in chosen and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


@contextmanager
def redis_cluster() -> Iterator[str]:
    """Yields the cluster's URL (`redis+cluster://` and one node's address)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
    ports = cluster_ports(3)
    folder = Path(tempfile.mkdtemp(prefix="tiergate-cluster-"))
    servers = []
    try:
        for port in ports:
            (folder / str(port)).mkdir()
            servers.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(folder / str(port)),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 10
        while not all(_answers(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's nodes did not start")
            time.sleep(0.05)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        while not all("cluster_state:ok" in _info(port) for port in ports):
            if time.monotonic() > deadline + 10:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(port: int) -> bool:
    return (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip()
        == "PONG"
    )


def _info(port: int) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True
    ).stdout


def flush(url: str) -> None:
    """Empty every node of the cluster at `url`."""
    port = url.rsplit(":", 1)[1]
    nodes = subprocess.run(
        ["redis-cli", "-p", port, "cluster", "nodes"], capture_output=True, text=True
    ).stdout
    for line in nodes.splitlines():
        address = line.split()[1].split("@")[0]
        subprocess.run(
            ["redis-cli", "-p", address.rsplit(":", 1)[1], "flushall"], check=True, capture_output=True
        )
