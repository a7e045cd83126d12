"""Routing quality on public data:
- the classifier tier on Banking77: train on train.csv, evaluate on test.csv, print the
  coverage/accuracy curve and the operating point at the calibrated threshold, and the lean
  path's time per decision;
- the classifier tier in an open set: Banking77 with 25 % and 50 % of its intents removed from
  training (seeded draws), their test rows out of scope: known-intent coverage, accuracy of what is
  answered, out-of-scope escalation, and what training promised against what is delivered (with
  --selection, on a split of train.csv only: how the calibration's methods were chosen);
- the learned router on RouteLLM's MMLU rows, with a seeded held-out fifth: APGR and CPT(50%),
  beside the heuristic complexity score and a random router; and across domains (router-domains):
  trained on three of MMLU's four subject groups, judged on the fourth.

  python benchmarks/routing_quality.py [--data ../shared/data] [--target-precision 0.98] [--embeddings]
                                      [--model MODEL] [--jobs N] [--removed 0.25 0.5] [--draws 3]
                                      [--selection]
                                      [--only classifier|open-set|router|router-domains|training-time]

With --embeddings the classifier also uses static word-piece embeddings (`tiergate train
--embeddings`). With --model it evaluates that model file (trained on Banking77's train.csv with
`tiergate train`) instead of training one; a model calibrated for a closed set (`--unseen-escalation
0`) is reported apart. Upper bounds choose the threshold on the judged rows themselves: what no
calibration of the model can beat, never a method's choice.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness import ROOT, Report

from routing.learned_router import LearnedScorer, RouterRow, apgr, cpt, heuristic_of_prompt, load_router_rows
from routing.router_training import train_router
from tiers.classifier.evaluation import evaluate
from tiers.classifier.model import ClassifierModel, Predictor
from tiers.classifier.rows import load_rows
from tiers.classifier.training import DEFAULT_UNSEEN_ESCALATION, sklearn_vectorizer, train
from tiers.types import ChatRequest, Message


def classifier(data: Path, target: float, embeddings: bool, path: Path | None, jobs: int) -> None:
    began = time.monotonic()
    if path is None:
        model = train(
            load_rows(data / "banking77" / "train.csv"),
            target_precision=target,
            embeddings=embeddings,
            jobs=jobs,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        trained = f"trained in {time.monotonic() - began:.0f} s"
    else:
        model = ClassifierModel.load(path)
        trained = f"model {path}"
    test = load_rows(data / "banking77" / "test.csv")
    report = evaluate(model, test)
    view = "" if model.embeddings is None else " with embeddings"
    view += "" if model.head is None else " and a head"
    closed = not model.metrics.get("out_of_fold", {}).get("promise", {}).get("unseen_target")
    view += ", calibrated for a closed set (no unseen-intent promise)" if closed else ""
    out = Report(
        "quality_classifier"
        + ("" if model.embeddings is None else "_embeddings")
        + ("_closed" if closed else "")
    )
    out.table(
        f"Classifier tier{view}, Banking77 ({len(test)} test rows; {trained}): coverage by threshold",
        ["threshold", *(f"{p['threshold']:.2f}" for p in report["curve"])],
        [
            ["coverage", *(f"{p['coverage']:.3f}" for p in report["curve"])],
            ["accuracy of answered", *(f"{p['accuracy']:.3f}" for p in report["curve"])],
        ],
    )
    out.table(
        f"Operating point (target precision {target})",
        ["calibrated threshold", "coverage", "accuracy of answered", "top-1", "upper bound on coverage"],
        [
            [
                f"{report['threshold']:.4f}",
                f"{report['coverage']:.4f}",
                f"{report['accuracy_answered']:.4f}",
                f"{report['top1_accuracy']:.4f}",
                f"{coverage_bound(model, test, target):.4f}",
            ]
        ],
    )
    predictor = Predictor(model)
    texts = [t for t, _ in test]
    compiled = timed(predictor.predict, texts)
    numpy_path = timed(predictor.lean.numpy_probabilities, texts)
    out.table(
        "Time per decision (µs)",
        ["path", "p50", "p99"],
        [
            ["compiled kernel" if predictor.lean.compiled else "kernel NOT built", *compiled],
            ["the same arithmetic in NumPy", *numpy_path],
            ["scikit-learn transform + predict_proba", sparse_time(model, texts[:300]), ""],
        ],
    )
    out.save()


def coverage_bound(
    model: ClassifierModel, rows: list[tuple[str, str | None]], target: float, share: float = 0.0
) -> float:
    """The largest share of known-intent rows answerable at `target` accuracy while at least
    `share` of the unseen intents' rows (label None) escalate, the threshold chosen on these rows:
    what no calibration of this model's confidence can beat. A row the out-of-scope class claims
    is never answered."""
    predictor = Predictor(model, min_confidence=0.0)
    predictions = [(predictor.predict(t), lab) for t, lab in rows]
    unseen = np.sort([p.confidence if p.ahead else -np.inf for p, lab in predictions if lab is None])
    known = sorted(
        ((p.confidence if p.ahead else -np.inf, p.best == lab) for p, lab in predictions if lab),
        key=lambda pair: -pair[0],
    )
    if not known:
        return 0.0
    confidences = np.array([c for c, _ in known])
    precision = np.cumsum([right for _, right in known]) / np.arange(1, len(known) + 1)
    # answering the top k known rows escalates every unseen row below the k-th confidence
    escalated = np.searchsorted(unseen, confidences, side="left")
    # a threshold answers all rows of one confidence or none: only the last of equals is a cut
    cut = np.append(confidences[:-1] != confidences[1:], True)
    # escalated counted in rows against share x rows (1 - share would make 0.9 of 760 75.99...)
    ok = cut & np.isfinite(confidences) & (precision >= target) & (escalated >= share * len(unseen) - 1e-9)
    passing = np.nonzero(ok)[0]
    return float((passing[-1] + 1) / len(known)) if len(passing) else 0.0


def timed(call: Callable[[str], object], texts: list[str]) -> tuple[float, float]:
    """p50 and p99 in µs of one call per text, after a warm-up on the first 200."""
    for text in texts[:200]:
        call(text)
    samples = []
    for text in texts:
        start = time.perf_counter()
        call(text)
        samples.append((time.perf_counter() - start) * 1e6)
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


def sparse_time(model: ClassifierModel, texts: list[str]) -> float:
    """scikit-learn's own transform + predict_proba for one text, with the model's fitted parts."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    vectorizers = [sklearn_vectorizer(part) for part in model.features]
    estimator = LogisticRegression()
    estimator.coef_, estimator.intercept_ = model.coef, model.intercept
    estimator.classes_ = np.array(model.classes)
    dense = model.dense_view()
    samples = []
    for text in texts:
        start = time.perf_counter()
        blocks = [v.transform([text]) for v in vectorizers]
        if dense is not None:
            blocks.append(sparse.csr_matrix(dense.features(text)))
        matrix = sparse.hstack(blocks).tocsr()
        estimator.predict_proba(matrix)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def open_set(
    data: Path, target: float, shares: list[float], draws: int, jobs: int, embeddings: bool, selection: bool
) -> None:
    """Banking77 with a share of its intents removed from training (seeded draws): their test rows
    are out of scope, as the open-intent literature measures it. Everything is chosen on the
    training rows (the product's own calibration); the test split only measures.

    With `selection`, test.csv is not read: each draw fits on 80 % of the kept intents' rows of
    train.csv and is judged on the other 20 % and on the removed intents' rows of train.csv
    (other seeds). The methods and parameters of the calibration were chosen this way."""
    train_rows = load_rows(data / "banking77" / "train.csv")
    intents = sorted({lab for _, lab in train_rows if lab is not None})
    rows = []
    for share in shares:
        for draw in range(draws):
            if selection:
                removed = set(random.Random(1000 + draw).sample(intents, round(share * len(intents))))
                kept = [(t, lab) for t, lab in train_rows if lab not in removed]
                order = list(range(len(kept)))
                random.Random(2000 + draw).shuffle(order)
                cut = int(0.8 * len(order))
                fit = [kept[i] for i in sorted(order[:cut])]
                judged = [kept[i] for i in sorted(order[cut:])]
                judged += [(t, None) for t, lab in train_rows if lab in removed]
            else:
                removed = set(random.Random(draw).sample(intents, round(share * len(intents))))
                fit = [(t, lab) for t, lab in train_rows if lab not in removed]
                judged = [
                    (t, None if lab in removed else lab)
                    for t, lab in load_rows(data / "banking77" / "test.csv")
                ]
            began = time.monotonic()
            model = train(
                fit,
                target_precision=target,
                embeddings=embeddings,
                jobs=jobs,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
            minutes = (time.monotonic() - began) / 60
            figures = evaluate(model, judged)
            promise = model.metrics["out_of_fold"]["promise"]
            known = sum(lab is not None for _, lab in judged)
            answered_known = figures["coverage"] * known
            correct = figures["accuracy_answered"] * answered_known
            answered_unknown = (1 - figures["out_of_scope_escalated"]) * figures["out_of_scope_rows"]
            mixed = (
                correct / (answered_known + answered_unknown) if answered_known + answered_unknown else 1.0
            )
            rows.append(
                [
                    f"{share:.0%}",
                    draw,
                    f"{promise['coverage']:.3f} / {figures['coverage']:.3f}",
                    f"{promise['interval'][0]:.3f} ({promise['precision']:.3f})"
                    f" / {figures['accuracy_answered']:.3f}",
                    f"{promise['unseen_interval'][0]:.3f} ({promise['unseen_escalated']:.3f})"
                    f" / {figures['out_of_scope_escalated']:.3f}",
                    f"{mixed:.3f}",
                    f"{coverage_bound(model, judged, target, DEFAULT_UNSEEN_ESCALATION):.3f}",
                    f"{minutes:.1f}",
                ]
            )
    split = (
        "train.csv only: fitted on 80 % of the kept intents' rows, judged on the rest and the removed"
        " intents' rows"
        if selection
        else f"judged on the {len(judged)}-row test split, the removed intents' rows out of scope"
    )
    out = Report(
        "quality_open_set" + ("_selection" if selection else "") + ("_embeddings" if embeddings else "")
    )
    out.table(
        f"Classifier tier{' with embeddings' if embeddings else ''}, Banking77 with intents removed"
        f" from training (seeded draws; {split}). Promised (from training alone) / delivered; the"
        " promises are 95 % lower bounds, with the point estimate in brackets",
        [
            "intents removed",
            "draw",
            "known-intent coverage",
            f"precision on known intents (target {target})",
            f"unseen intents escalated (target {DEFAULT_UNSEEN_ESCALATION})",
            "precision of all answers",
            f"upper bound on known-intent coverage (at {target},"
            f" {DEFAULT_UNSEEN_ESCALATION:.0%} of unseen escalated)",
            "training (min)",
        ],
        rows,
    )
    out.save()


def training_time(data: Path, jobs: int) -> None:
    """`tiergate train`'s time at the size a retraining loop meets: Banking77's train.csv twice
    (20,006 rows), the second copy's rows prefixed and relabelled as other intents (154 labels),
    with the default calibration (5 folds, 8 label rounds)."""
    rows = load_rows(data / "banking77" / "train.csv")
    rows += [(f"about my second account: {text}", f"{label}_second") for text, label in rows]
    began = time.monotonic()
    model = train(rows, target_precision=0.98, jobs=jobs, progress=lambda line: print(line, file=sys.stderr))
    minutes = (time.monotonic() - began) / 60
    out = Report("quality_training_time")
    out.table(
        f"Training time (tiergate train, defaults, --jobs {jobs})",
        ["rows", "labels", "cores", "minutes"],
        [[len(rows), len(model.classes), os.cpu_count(), f"{minutes:.1f}"]],
    )
    out.save()


# MMLU's own grouping of its subjects (Hendrycks et al., categories.py): STEM, humanities, social
# sciences, other (business, health, miscellany).
MMLU_GROUPS = {
    "STEM": "abstract_algebra astronomy college_biology college_chemistry college_computer_science"
    " college_mathematics college_physics computer_security conceptual_physics electrical_engineering"
    " elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science"
    " high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history"
    " international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy"
    " prehistory professional_law world_religions",
    "social sciences": "econometrics high_school_geography high_school_government_and_politics"
    " high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality"
    " professional_psychology public_relations security_studies sociology us_foreign_policy",
    "other": "anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging"
    " management marketing medical_genetics miscellaneous nutrition professional_accounting"
    " professional_medicine virology",
}


def router_scores(
    model: ClassifierModel, held: list[RouterRow], rng: random.Random
) -> dict[str, list[float]]:
    """Each router's scores of the held rows: the learned router's own (blended), its learned
    model alone, the heuristic, and random."""
    learned = LearnedScorer(model)
    requests = [ChatRequest(model="m", messages=[Message(role="user", content=r.prompt)]) for r in held]
    return {
        "learned router (blended)": [
            learned.score(q, len(r.prompt) // 4) for q, r in zip(requests, held, strict=True)
        ],
        "learned model alone": [learned.score_text(r.prompt) for r in held],
        "heuristic complexity": [heuristic_of_prompt(r.prompt) for r in held],
        "random": [rng.random() for _ in held],
    }


def router(data: Path, seed: int) -> None:
    rows = load_router_rows(data / "routellm-mmlu" / "mmlu_routing.jsonl")
    rng = random.Random(seed)
    rng.shuffle(rows)
    cut = int(len(rows) * 0.8)
    train_rows, held = rows[:cut], rows[cut:]
    began = time.monotonic()
    model = train_router(train_rows, progress=lambda line: print(line, file=sys.stderr, flush=True))
    trained = time.monotonic() - began
    out = Report("quality_router")
    out.table(
        f"Router, RouteLLM MMLU ({len(train_rows)} training rows, {len(held)} held out, seed {seed};"
        f" trained in {trained:.0f} s)",
        ["router", "APGR", "CPT(50%)"],
        [
            [name, f"{apgr(values, held):.4f}", f"{cpt(values, held):.4f}"]
            for name, values in router_scores(model, held, rng).items()
        ],
    )
    out.save()


def router_domains(data: Path, seed: int) -> None:
    """The learned router outside its domain: trained on three of MMLU's four subject groups
    (its blend chosen on folds of their subjects), judged on the fourth."""
    rows = load_router_rows(data / "routellm-mmlu" / "mmlu_routing.jsonl")
    group_of = {subject: group for group, subjects in MMLU_GROUPS.items() for subject in subjects.split()}
    rng = random.Random(seed)
    table = []
    for held_group in MMLU_GROUPS:
        train_rows = [r for r in rows if group_of[str(r.group)] != held_group]
        held = [r for r in rows if group_of[str(r.group)] == held_group]
        model = train_router(train_rows, progress=lambda line: print(line, file=sys.stderr, flush=True))
        scores = router_scores(model, held, rng)
        table.append(
            [held_group, len(train_rows), len(held)]
            + [f"{apgr(values, held):.4f}" for name, values in scores.items() if name != "random"]
        )
    out = Report("quality_router_domains")
    out.table(
        "Router, RouteLLM MMLU across subject groups: trained on three groups, judged on the fourth (APGR)",
        [
            "judged on",
            "training rows",
            "judged rows",
            "learned router (blended)",
            "learned model alone",
            "heuristic",
        ],
        table,
    )
    out.save()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--target-precision", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", choices=["classifier", "open-set", "router", "router-domains", "training-time"]
    )
    parser.add_argument(
        "--removed", type=float, nargs="+", default=[0.25, 0.5], help="open set: shares removed"
    )
    parser.add_argument("--draws", type=int, default=3, help="open set: seeded draws per share")
    parser.add_argument(
        "--selection",
        action="store_true",
        help="open set: judge on a split of train.csv, never reading test.csv",
    )
    parser.add_argument("--embeddings", action="store_true", help="the classifier with embeddings too")
    parser.add_argument("--model", type=Path, help="evaluate this model file instead of training one")
    parser.add_argument("--jobs", type=int, default=1, help="folds fitted at a time when training")
    args = parser.parse_args()
    if args.only in (None, "classifier"):
        classifier(args.data, args.target_precision, args.embeddings, args.model, args.jobs)
    if args.only in (None, "open-set"):
        open_set(
            args.data,
            args.target_precision,
            args.removed,
            args.draws,
            args.jobs,
            args.embeddings,
            args.selection,
        )
    if args.only in (None, "router"):
        router(args.data, args.seed)
    if args.only in (None, "router-domains"):
        router_domains(args.data, args.seed)
    if args.only in (None, "training-time"):
        training_time(args.data, args.jobs)


if __name__ == "__main__":
    main()
