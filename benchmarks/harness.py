"""Shared by the benchmarks: start the simulated upstream, a gateway and Redis as real processes on
loopback, and measure latency (paired, one connection) and throughput (wrk, many connections)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def commit() -> str:
    """The commit measured, marked `-dirty` when tracked files other than the results differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    name = head.stdout.strip() or "unknown"
    return f"{name}-dirty" if changed.stdout.strip() else name


class Report:
    """A benchmark's current figures: tables written to `benchmarks/results/<name>.json`, from which
    `benchmarks/report.py` writes the tables of benchmarks/README.md."""

    def __init__(self, name: str, command: str | None = None) -> None:
        self.name = name
        self.command = command or " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
        self.tables: list[dict[str, Any]] = []
        self.started = time.gmtime()

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.tables.append({"title": title, "columns": columns, "rows": rows})

    def save(self, raw: dict[str, Any] | None = None) -> Path:
        """Writes the figures with when, where and at which commit they were measured; prints them."""
        import platform

        document = {
            "benchmark": self.name,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", self.started),
            "commit": commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "command": self.command,
            "tables": self.tables,
            "raw": raw or {},
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{self.name}.json"
        out.write_text(json.dumps(document, indent=1, default=str) + "\n")
        for table in self.tables:
            print(f"\n{table['title']}\n")
            print("| " + " | ".join(table["columns"]) + " |")
            for row in table["rows"]:
                print("| " + " | ".join(str(cell) for cell in row) + " |")
        print(f"\n(figures: {out.relative_to(ROOT)}; `python benchmarks/report.py` updates the README)")
        return out


def worker_pid(port: int) -> int:
    """The process listening on this port (a gateway's one worker)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def rss_and_fds(pid: int) -> tuple[float, int]:
    """A process's resident memory in MiB and its open file descriptors."""
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


@contextmanager
def process(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def simulator(extra: list[str] | None = None) -> Iterator[str]:
    port = free_port()
    cli = [sys.executable, "-m", "gateway.cli", "simulate-upstream", "--port", str(port), *(extra or [])]
    with process(cli, port):
        yield f"http://127.0.0.1:{port}/v1"


@contextmanager
def redis_server() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with process(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], port):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def gateway(config: dict[str, Any], workers: int = 1) -> Iterator[str]:
    port = free_port()
    config = {**config, "server": {**config.get("server", {}), "port": port, "workers": workers}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    try:
        with process([sys.executable, "-m", "gateway.cli", "serve", "--config", handle.name], port):
            yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.unlink(handle.name)


def chat_body(model: str, text: str = "Route this ticket: my card was charged twice", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra}).encode()


async def _paired(targets: list[tuple[str, bytes, dict[str, str]]], n: int) -> list[list[float]]:
    """Latency of each target, in ms, sending one request to each in turn, in a new random order
    each round: drift hits all alike, and so does the place in the round (a target that follows
    another gateway, rather than itself, measurably pays for the caches it finds cold)."""
    times: list[list[float]] = [[] for _ in targets]
    order = random.Random(0)
    connector = aiohttp.TCPConnector(limit=len(targets))
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(n + 50):
            turns = list(enumerate(targets))
            order.shuffle(turns)
            for j, (url, body, headers) in turns:
                began = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                if i >= 50:  # warm-up
                    times[j].append((time.perf_counter() - began) * 1000)
    return times


def paired_latency(targets: list[tuple[str, bytes, dict[str, str]]], n: int) -> list[dict[str, float]]:
    results = asyncio.run(_paired(targets, n))
    return [summarise(t) for t in results]


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "n": float(len(ordered)),
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("WRK_AUTH")
local bodies, next_body = {}, 0
local path = os.getenv("WRK_BODIES")
if path then
  for line in io.lines(path) do bodies[#bodies + 1] = line end
  request = function()
    next_body = next_body % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[next_body])
  end
end
"""


def throughput(
    url: str, body: bytes | list[bytes], auth: str, connections: int, seconds: int
) -> dict[str, float]:
    """Requests per second with wrk (2 threads), and the share of non-2xx answers. With a list of
    bodies, each wrk thread sends them in turn (one JSON document per body, no newlines)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    bodies = body if isinstance(body, list) else [body]
    with (
        tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script,
        tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as listed,
    ):
        script.write(WRK_SCRIPT)
        listed.write(b"\n".join(bodies) + b"\n")
    env = {**os.environ, "WRK_BODY": bodies[0].decode(), "WRK_AUTH": auth}
    if len(bodies) > 1:
        env["WRK_BODIES"] = listed.name
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
        os.unlink(listed.name)
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    errors = 0
    for line in out.splitlines():
        if "Non-2xx" in line:
            errors = int(line.split()[-1])
    total = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    return {"rps": rps, "non_2xx": float(errors), "requests": float(total)}
