"""Serving: one uvicorn server per worker process, all accepting on one shared socket."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import uvicorn

from gateway.config.models import GatewayConfig, SimulatorConfig
from gateway.http.app import create_app
from gateway.http.protocol import ConnectionLimits, guarded_protocol
from gateway.observe import multiprocess

log = logging.getLogger("tiergate")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, config: GatewayConfig, **extra: Any) -> uvicorn.Config:
    """How uvicorn serves the gateway: httptools with the connection limits of `server`."""
    server = config.server
    limits = ConnectionLimits(server.max_header_bytes, server.header_timeout_s, server.body_timeout_s)
    return uvicorn.Config(
        app,
        loop="auto",
        http=guarded_protocol(limits),
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
        timeout_graceful_shutdown=int(server.shutdown_grace_s),
        timeout_keep_alive=int(max(1, server.keep_alive_s)),
        limit_concurrency=server.max_connections,
        backlog=2048,
        **extra,
    )


def _serve_worker(
    config: GatewayConfig, load: Callable[[], GatewayConfig] | None, sock: socket.socket, supervised: bool
) -> None:
    app = create_app(config, load, reload_via_parent=supervised, freeze_heap=True)
    uvicorn.Server(uvicorn_config(app, config)).run(sockets=[sock])


def _run_simulator(settings: SimulatorConfig, encoding: str) -> None:
    from budgets.tokens import TokenCounter, load_encoding
    from tiers.llm.simulator import SimulatorSettings, run_simulator

    run_simulator(
        settings.host,
        settings.port,
        SimulatorSettings(latency_ms=settings.latency_ms, per_token_ms=settings.per_token_ms),
        TokenCounter(load_encoding(encoding)),
    )


def _exit(signum: int, _: object) -> None:
    raise SystemExit(0)  # a graceful stop: in-flight requests were drained


def serve(config: GatewayConfig, load: Callable[[], GatewayConfig] | None = None) -> None:
    """Run until SIGINT or SIGTERM; in-flight requests are drained before workers exit. SIGHUP
    reloads the config (re-read with `load`) in every worker."""
    host, port, workers = config.server.host, config.server.port, config.server.workers
    context = multiprocessing.get_context("fork")
    children: list[multiprocessing.process.BaseProcess] = []
    if config.simulator is not None:
        simulator = context.Process(
            target=_run_simulator, args=(config.simulator, config.tokenizer.encoding), daemon=True
        )
        simulator.start()
        children.append(simulator)
        log.warning("simulated upstream on http://%s:%d/v1", config.simulator.host, config.simulator.port)
    sock = _bind(host, port)
    metrics_directory = None
    log.warning("tiergate serving on http://%s:%d/v1 with %d worker(s)", host, sock.getsockname()[1], workers)
    if config.store is not None and config.server.admin_key is not None:
        log.warning(
            "operator console on http://%s:%d/console (log in with the admin key or a viewer key)",
            host,
            sock.getsockname()[1],
        )
    try:
        if workers == 1:
            # uvicorn raises the signal that stopped it again once it is done; exiting through
            # SystemExit instead lets the `finally` below stop the simulator child (killed by the
            # signal, the process would leave it running, holding its port).
            signal.signal(signal.SIGTERM, _exit)
            _serve_worker(config, load, sock, supervised=False)
            return
        metrics_directory = multiprocess.enable()  # one scrape of any worker reports them all
        procs = [
            context.Process(target=_serve_worker, args=(config, load, sock, True)) for _ in range(workers)
        ]
        for proc in procs:
            proc.start()

        def forward(signum: int, _: object) -> None:
            for proc in procs:
                if proc.pid is not None:
                    with suppress(ProcessLookupError):
                        os.kill(proc.pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGHUP, forward)
        for proc in procs:
            proc.join()
            if proc.pid is not None:
                multiprocess.worker_stopped(proc.pid)
    finally:
        if metrics_directory is not None:
            multiprocess.disable(metrics_directory)
        sock.close()
        for child in children:
            child.terminate()
            child.join(5)
            if child.is_alive():  # it must not outlive the gateway (and hold its port)
                child.kill()
                child.join(5)
