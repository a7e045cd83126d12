"""Real servers for tests: the gateway under uvicorn and the simulated upstream, each on a free
port in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
import yaml
from aiohttp import web

from budgets.tokens import TokenCounter, load_encoding
from gateway.config.models import GatewayConfig
from gateway.http.app import create_app
from gateway.runtime.workers import uvicorn_config
from tiers.llm.simulator import SimulatedUpstream, SimulatorSettings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator_server(settings: SimulatorSettings | None = None) -> Iterator[tuple[str, SimulatedUpstream]]:
    """Yields the simulator's base URL (ending in /v1) and the simulator, whose stats tests read."""
    simulated = SimulatedUpstream(settings or SimulatorSettings(), TokenCounter(load_encoding(None)))
    with aiohttp_server(simulated.app()) as url:
        yield f"{url}/v1", simulated


@contextmanager
def aiohttp_server(app: web.Application) -> Iterator[str]:
    """Serves an aiohttp application on a free port in a thread with its own loop; yields its URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def gateway_server(config: GatewayConfig, load: Callable[[], GatewayConfig] | None = None) -> Iterator[str]:
    """Yields the gateway's base URL (ending in /v1); `load` re-reads the config on a reload."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(config, load), config, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A receiver that keeps every JSON body POSTed to it."""
    received: list[dict[str, object]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    with aiohttp_server(app) as url:
        yield f"{url}/hook", received


def until(check: Callable[[], T], timeout_s: float = 10.0, every_s: float = 0.05) -> T:
    """`check()` once it is truthy, or its last value when `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


@contextmanager
def serve_process(config: dict[str, Any], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`tiergate serve` as a process of its own (workers and all) on `config`'s port, once it
    answers /healthz; stopped with SIGTERM (and waited for) at the end."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{config['server']['port']}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not until(up, timeout_s=30):
            raise RuntimeError("the gateway did not start")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
