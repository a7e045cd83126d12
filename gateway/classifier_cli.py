"""The `tiergate` commands of the classifier tier and the learned router: train, predict, eval,
train-router, eval-router. The classifier (and scikit-learn) load only for the commands that use
them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tiers.classifier.model import ClassifierModel


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


def classifier_commands(sub: Any) -> None:
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
