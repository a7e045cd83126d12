"""The `tiergate` command line: serve, check-config, config-schema, simulate-upstream."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from gateway.config import GatewayConfig
from gateway.config_loading import ConfigError, load_config


def _load_or_exit(path: str | None) -> GatewayConfig:
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    config = _load_or_exit(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    if overrides:
        config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
    serve(config)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.file)
    print(
        f"{args.file}: ok ({len(config.agents)} agents, {len(config.routes)} routes, "
        f"{len(config.upstreams)} upstreams)"
    )
    return 0


def cmd_config_schema(_: argparse.Namespace) -> int:
    print(json.dumps(GatewayConfig.model_json_schema(), indent=2))
    return 0


def cmd_simulate_upstream(args: argparse.Namespace) -> int:
    from budgets.tokens import TokenCounter, load_encoding
    from tiers.simulator import SimulatorSettings, run_simulator

    faults = dict(item.split("=", 1) for item in args.fault or [])
    settings = SimulatorSettings(
        latency_ms=args.latency_ms,
        per_token_ms=args.per_token_ms,
        reply_words=args.reply_words,
        faults=faults,
    )
    print(f"simulated upstream on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    run_simulator(args.host, args.port, settings, TokenCounter(load_encoding(None)))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tiergate", description="A tiered decision gateway for agents.")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", help="YAML config (default: the built-in quickstart)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(run=cmd_serve)

    check = sub.add_parser("check-config", help="report every problem in a config file")
    check.add_argument("file")
    check.set_defaults(run=cmd_check_config)

    schema = sub.add_parser("config-schema", help="print the config's JSON schema")
    schema.set_defaults(run=cmd_config_schema)

    sim = sub.add_parser("simulate-upstream", help="serve the simulated OpenAI-compatible upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8081)
    sim.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency per answer")
    sim.add_argument("--per-token-ms", type=float, default=0.0, help="latency per completion token")
    sim.add_argument("--reply-words", type=int, default=24)
    sim.add_argument("--fault", action="append", metavar="MODEL=FAULT", help="fault for a model name")
    sim.set_defaults(run=cmd_simulate_upstream)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
