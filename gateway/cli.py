"""The `tiergate` command line: serve, check-config, config-schema, db, train, eval, simulate-upstream."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gateway.classifier_cli import classifier_commands
from gateway.config.loading import ConfigError, load_config
from gateway.config.models import GatewayConfig


def _load_or_exit(path: str | None) -> GatewayConfig:
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.config.model_files import missing_models, train_missing_models
    from gateway.runtime.workers import serve

    config = _load_or_exit(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}

    def load() -> GatewayConfig:
        fresh = load_config(args.config, os.environ)
        if overrides:  # command-line choices hold across reloads
            fresh = fresh.model_copy(update={"server": fresh.server.model_copy(update=overrides)})
        return fresh

    if overrides:
        config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
    problems = missing_models(config)
    if problems:
        print("tiergate serve: " + "; ".join(problems), file=sys.stderr)
        return 1
    train_missing_models(config)  # once, before the workers start
    if config.store is not None:
        from gateway.store.runtime import StoreError, prepare

        try:
            prepare(config.store)
        except StoreError as exc:
            print(f"tiergate serve: {exc}", file=sys.stderr)
            return 1
    serve(config, load)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.file)
    from gateway.config.model_files import missing_models

    missing = missing_models(config)
    if missing:
        print(f"{args.file}: {len(missing)} problem(s)", file=sys.stderr)
        for problem in missing:
            print(f"  {problem}", file=sys.stderr)
        return 1
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
    from tiers.llm.simulator import SimulatorSettings, run_simulator

    faults = dict(item.split("=", 1) for item in args.fault or [])
    settings = SimulatorSettings(
        latency_ms=args.latency_ms,
        per_token_ms=args.per_token_ms,
        reply_words=args.reply_words,
        faults=faults,
        batch_delay_s=args.batch_delay_s,
    )
    print(f"simulated upstream on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    run_simulator(args.host, args.port, settings, TokenCounter(load_encoding(None)))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """`db upgrade` and `db current`: the decision store's schema version."""
    import asyncio

    from gateway.store.engine import create_engine
    from gateway.store.migrate import current_revision, head_revision, upgrade

    config = _load_or_exit(args.config)
    if config.store is None:
        print(f"{args.config or 'the quickstart'}: no store configured (store.url)", file=sys.stderr)
        return 1
    url = config.store.url

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            if args.db_command == "upgrade":
                await upgrade(engine, url, args.revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        found = asyncio.run(run())
    except Exception as exc:
        print(f"the store at {_safe_url(url)} cannot be used: {exc}", file=sys.stderr)
        return 1
    head = head_revision()
    state = "up to date" if found == head else f"behind: this gateway needs {head}"
    print(f"{_safe_url(url)}: revision {found or 'none'} ({state})")
    return 0 if found == head or args.db_command == "current" else 1


def cmd_export_training(args: argparse.Namespace) -> int:
    """Training rows from a route's feedback corrections and audited answers, as JSONL."""
    import asyncio

    from gateway.admin.decisions import when
    from gateway.errors import BadRequest
    from gateway.governance.export import jsonl, training_rows
    from gateway.store.engine import create_engine
    from gateway.store.sql import SqlStore

    config = _load_or_exit(args.config)
    if config.store is None:
        print("tiergate export-training: the config has no store (store.url)", file=sys.stderr)
        return 1
    if config.route(args.route) is None:
        print(f"tiergate export-training: no route {args.route!r} in the config", file=sys.stderr)
        return 1
    try:
        since = when(args.since, "since") if args.since else None
    except BadRequest as exc:
        print(f"tiergate export-training: {exc.message}", file=sys.stderr)
        return 1
    url = config.store.url

    async def run() -> list[bytes]:
        store = SqlStore(create_engine(url))
        try:
            return list(jsonl(await training_rows(store, args.route, since)))
        finally:
            await store.close()

    lines = asyncio.run(run())
    with open(args.out, "wb") as out:
        out.writelines(lines)
    print(f"{args.out}: {len(lines)} rows from route {args.route!r}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Two (or more) models side by side on the same held-out rows."""
    from tiers.classifier.evaluation import evaluate
    from tiers.classifier.model import ClassifierModel, ModelError
    from tiers.classifier.rows import DataError, load_rows

    try:
        rows = load_rows(args.data)
        models = [ClassifierModel.load(path) for path in args.model]
    except (DataError, ModelError, OSError) as exc:
        print(f"tiergate compare: {exc}", file=sys.stderr)
        return 1
    reports = [evaluate(model, rows) for model in models]
    if args.json:
        print(json.dumps({path: r for path, r in zip(args.model, reports, strict=True)}, indent=2))
        return 0

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    width = max(len(p) for p in args.model)
    print(f"{'':26} " + " ".join(f"{p:>{width}}" for p in args.model))
    for name, key in (
        ("threshold", "threshold"),
        ("top-1 accuracy", "top1_accuracy"),
        ("coverage at threshold", "coverage"),
        ("precision of answered", "accuracy_answered"),
        ("out-of-scope escalated", "out_of_scope_escalated"),
    ):
        print(f"{name:26} " + " ".join(f"{figure(r[key]):>{width}}" for r in reports))
    print(f"({len(rows)} rows, {reports[0]['out_of_scope_rows']} of them out of scope)")
    return 0


def _safe_url(url: str) -> str:
    """A URL as it may be printed: without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _store_commands(sub: Any) -> None:
    """export-training, compare, db"""
    export = sub.add_parser(
        "export-training", help="training rows from a route's feedback corrections and audited answers"
    )
    export.add_argument("--config", help="YAML config (default: the built-in quickstart)")
    export.add_argument("--route", required=True)
    export.add_argument("--since", help="only verdicts from then on (epoch seconds or ISO 8601)")
    export.add_argument("--out", required=True, help="a JSONL file of {text, label}")
    export.set_defaults(run=cmd_export_training)

    compare = sub.add_parser(
        "compare", help="models side by side: coverage, precision, out-of-scope escalation"
    )
    compare.add_argument("--model", required=True, action="append", help="give it once per model")
    compare.add_argument("--data", required=True, help="held-out rows (CSV or JSONL)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=cmd_compare)

    db = sub.add_parser("db", help="the decision store's schema: upgrade it, or say where it stands")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="bring the store's schema up to date")
    db_upgrade.add_argument("--revision", default="head", help="a migration to stop at (default: head)")
    db_current = db_commands.add_parser("current", help="the store's schema revision")
    for command in (db_upgrade, db_current):
        command.add_argument("--config", help="YAML config (default: the built-in quickstart)")
        command.set_defaults(run=cmd_db)


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

    classifier_commands(sub)
    _store_commands(sub)
    sim = sub.add_parser("simulate-upstream", help="serve the simulated OpenAI-compatible upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8081)
    sim.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency per answer")
    sim.add_argument("--per-token-ms", type=float, default=0.0, help="latency per completion token")
    sim.add_argument("--reply-words", type=int, default=24)
    sim.add_argument("--fault", action="append", metavar="MODEL=FAULT", help="fault for a model name")
    sim.add_argument("--batch-delay-s", type=float, default=0.0, help="how long a provider batch takes")
    sim.set_defaults(run=cmd_simulate_upstream)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
