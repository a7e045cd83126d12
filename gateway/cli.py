"""The `tiergate` command line: serve, check-config, config-schema, db, train, eval, simulate-upstream."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.config.loading import ConfigError, load_config
from gateway.config.models import GatewayConfig

if TYPE_CHECKING:  # the classifier (and scikit-learn) load only for the commands that use them
    from tiers.classifier.model import ClassifierModel


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


def cmd_train(args: argparse.Namespace) -> int:
    from tiers.classifier.rows import DataError, load_rows
    from tiers.classifier.training import (
        DEFAULT_CLASS_ROUNDS,
        DEFAULT_FOLDS,
        DEFAULT_UNSEEN_ESCALATION,
        train,
    )

    try:
        rows = [row for path in args.data for row in load_rows(path)]
        model = train(
            rows,
            target_precision=args.target_precision,
            c=args.c,
            seed=args.seed,
            folds=DEFAULT_FOLDS if args.folds is None else args.folds,
            class_rounds=DEFAULT_CLASS_ROUNDS if args.class_rounds is None else args.class_rounds,
            unseen_escalation=DEFAULT_UNSEEN_ESCALATION
            if args.unseen_escalation is None
            else args.unseen_escalation,
            bound=not args.point_estimates,
            embeddings=args.embeddings,
            jobs=args.jobs,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except DataError as exc:
        print(f"tiergate train: {exc}", file=sys.stderr)
        return 1
    model.save(args.out)
    held = model.metrics["out_of_fold"]
    print(
        f"{args.out}: {len(model.classes)} classes, threshold {model.threshold:.4f}; out of fold: "
        f"top-1 {held['top1_accuracy']:.4f}, coverage {held['coverage']:.4f} "
        f"at accuracy {held['accuracy_answered']:.4f}; confidence: {_confidence_words(held['confidence'])}"
    )
    for line in promise_lines(held.get("promise")):
        print(line)
    return 0


def promise_lines(promise: dict[str, Any] | None) -> list[str]:
    """What a model's calibration promises, for people (models before format 6 promise nothing
    beyond their threshold)."""
    if promise is None:
        return []
    low, high = promise["interval"]
    lines = [
        f"promised precision {promise['target']:.4f}: {promise['precision']:.4f} out of fold"
        f" (95 % interval {low:.4f}-{high:.4f}), expected coverage {promise['coverage']:.4f}"
    ]
    if promise["unseen_escalated"] is not None:
        low, high = promise["unseen_interval"]
        lines.append(
            f"unseen intents escalated {promise['unseen_escalated']:.4f} of {promise['unseen_rows']}"
            f" rows of held-out labels (95 % interval {low:.4f}-{high:.4f};"
            f" promised at least {promise['unseen_target']:.2f})"
        )
    if not promise.get("bound", True):
        lines.append("calibrated to these point estimates, not to the lower bounds of their intervals")
    if promise["coverage"] == 0:
        lines.append(
            "warning: no threshold keeps these promises, so the model answers nothing (every request"
            " escalates); lower --target-precision or --unseen-escalation, or add training rows"
        )
    return lines


def _model_and_rows(
    args: argparse.Namespace, labelled: bool = True
) -> tuple[ClassifierModel, list[tuple[str, str | None]]] | None:
    """The model and rows a predict or eval command names; None (with the reason printed) if unusable."""
    from tiers.classifier.model import ClassifierModel, ModelError
    from tiers.classifier.rows import DataError, load_rows

    try:
        return ClassifierModel.load(args.model), load_rows(args.data, labelled)
    except (ModelError, DataError) as exc:
        print(f"tiergate {args.command}: {exc}", file=sys.stderr)
        return None


def cmd_predict(args: argparse.Namespace) -> int:
    from tiers.classifier.model import Predictor

    loaded = _model_and_rows(args, labelled=False)
    if loaded is None:
        return 1
    model, rows = loaded
    predictor = Predictor(model, args.min_confidence)
    out = sys.stdout
    for text, _ in rows:
        prediction = predictor.predict(text)
        out.write(
            json.dumps(
                {
                    "label": prediction.label,
                    "confidence": prediction.confidence,
                    "escalate": prediction.escalate,
                }
            )
            + "\n"
        )
    return 0


def _confidence_words(kind: str) -> str:
    """A report's `confidence` ("reliability" or "margin") for people."""
    return "confidence model" if kind == "reliability" else "margin (top minus runner-up probability)"


def cmd_eval(args: argparse.Namespace) -> int:
    from tiers.classifier.evaluation import evaluate

    loaded = _model_and_rows(args)
    if loaded is None:
        return 1
    model, rows = loaded
    report = evaluate(model, rows, args.min_confidence)
    report["promise"] = model.metrics.get("out_of_fold", {}).get("promise")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for line in promise_lines(report["promise"]):
        print(line)
    print(f"rows {report['rows']}, threshold {report['threshold']:.4f}")
    print(f"confidence                {_confidence_words(report['confidence'])}")
    print(f"top-1 accuracy            {report['top1_accuracy']:.4f}")
    print(f"coverage at threshold     {report['coverage']:.4f}")
    print(f"accuracy of answered rows {report['accuracy_answered']:.4f}")
    if report["out_of_scope_escalated"] is not None:
        escalated, count = report["out_of_scope_escalated"], report["out_of_scope_rows"]
        print(f"out-of-scope escalated    {escalated:.4f} of {count}")
    print("threshold  coverage  accuracy")
    for point in report["curve"]:
        print(f"{point['threshold']:9.2f}  {point['coverage']:8.4f}  {point['accuracy']:8.4f}")
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    from routing.learned_router import load_router_rows
    from routing.router_training import train_router

    rows = load_router_rows(args.data)
    print(f"training a router on {len(rows)} rows", file=sys.stderr, flush=True)
    model = train_router(rows, c=args.c, progress=lambda line: print(line, file=sys.stderr, flush=True))
    model.save(args.out)
    choice = model.metrics["blend_choice"]
    print(
        f"{args.out}: router saved; out of fold ({choice['folds']} folds"
        f"{' of unseen subjects' if choice['grouped'] else ''}): APGR {choice['apgr_blended']:.4f}"
        f" (learned alone {choice['apgr_learned']:.4f}, heuristic {choice['apgr_heuristic']:.4f})"
    )
    return 0


class _Unblended:
    """A learned router's own score, before the heuristic is blended in."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer

    def score(self, request: Any, prompt_tokens: int) -> float:
        return float(self._scorer.score_text(request.last_user_text()))


def cmd_eval_router(args: argparse.Namespace) -> int:
    from routing.complexity import HeuristicScorer
    from routing.learned_router import LearnedScorer, apgr, cpt, load_router_rows
    from tiers.classifier.model import ClassifierModel, ModelError
    from tiers.types import ChatRequest, Message

    rows = load_router_rows(args.data)
    report: dict[str, dict[str, float]] = {}
    scorers: list[tuple[str, Any]] = [("heuristic", HeuristicScorer())]
    if args.model:
        try:
            learned = LearnedScorer(ClassifierModel.load(args.model))
        except ModelError as exc:
            print(f"tiergate eval-router: {exc}", file=sys.stderr)
            return 1
        # the router's own score blends in the heuristic for prompts unlike its training ones
        scorers[:0] = [("learned", learned), ("learned_alone", _Unblended(learned))]
    for name, scorer in scorers:
        scores = []
        for row in rows:
            request = ChatRequest(model="auto", messages=[Message(role="user", content=row.prompt)])
            scores.append(scorer.score(request, len(row.prompt) // 4))
        report[name] = {"apgr": apgr(scores, rows), "cpt50": cpt(scores, rows, 0.5)}
    if args.json:
        print(json.dumps({"rows": len(rows), **report}, indent=2))
    else:
        for name, figures in report.items():
            print(
                f"{name:13s} APGR {figures['apgr']:.4f}  CPT(50%) {figures['cpt50']:.4f}  ({len(rows)} rows)"
            )
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


def _classifier_commands(sub: Any) -> None:
    """train, predict, eval, train-router, eval-router"""
    train = sub.add_parser("train", help="train a classifier-tier model from CSV or JSONL rows")
    train.add_argument(
        "--data",
        required=True,
        action="append",
        help="CSV (text, label|category) or JSONL ({text, label}); give it again to train on several files",
    )
    train.add_argument("--out", required=True, help="where to write the model (.joblib)")
    train.add_argument(
        "--target-precision", type=float, default=0.975, help="calibrate the threshold to this"
    )
    train.add_argument("--c", type=float, default=20.0, help="inverse regularisation of the linear model")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--folds",
        type=int,
        help="fit the confidence model and calibrate the threshold on this many out-of-fold scorings"
        " (default 5; near-duplicate rows stay in one fold)",
    )
    train.add_argument(
        "--class-rounds",
        type=int,
        help="and on this many rounds each holding out a share of the labels, whose rows are scored as"
        " the unseen intents they are (default 8; 0: none)",
    )
    train.add_argument(
        "--unseen-escalation",
        type=float,
        help="escalate at least this share of the held-out labels' rows (default 0.9; 0: no such promise)",
    )
    train.add_argument(
        "--point-estimates",
        action="store_true",
        help="calibrate so that the promises' point estimates, not the lower bounds of their 95 %% intervals,"
        " reach the targets (for example sets of a few hundred rows, too few to show a bound)",
    )
    train.add_argument(
        "--embeddings",
        action="store_true",
        help="add static word-piece embeddings to the features and a small network over them (needs"
        " tiergate[embeddings]; see docs)",
    )
    train.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="fit this many folds at a time, in worker processes (default 1; the same model, up to rounding)",
    )
    train.set_defaults(run=cmd_train)

    for name, func, doc in (
        ("predict", cmd_predict, "one JSON line per row: label, confidence, escalate"),
        ("eval", cmd_eval, "accuracy, coverage at the threshold, out-of-scope escalation, the curve"),
    ):
        command = sub.add_parser(name, help=doc)
        command.add_argument("--model", required=True)
        command.add_argument("--data", required=True)
        command.add_argument("--min-confidence", type=float, help="override the calibrated threshold")
        if name == "eval":
            command.add_argument("--json", action="store_true")
        command.set_defaults(run=func)

    router = sub.add_parser("train-router", help="train a learned router from JSONL prompt/weak/strong rows")
    router.add_argument("--data", required=True)
    router.add_argument("--out", required=True)
    router.add_argument("--c", type=float, default=0.3)
    router.set_defaults(run=cmd_train_router)

    router_eval = sub.add_parser(
        "eval-router", help="APGR and CPT(50%%) of the learned and heuristic routers"
    )
    router_eval.add_argument("--model", help="a model from train-router (the heuristic is always reported)")
    router_eval.add_argument("--data", required=True)
    router_eval.add_argument("--json", action="store_true")
    router_eval.set_defaults(run=cmd_eval_router)


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

    _classifier_commands(sub)
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
