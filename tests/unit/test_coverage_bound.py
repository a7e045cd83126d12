"""The routing-quality benchmark's upper bound on coverage equals the best threshold found by
trying every one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.intents import make_rows
from tiers.classifier.model import ClassifierModel, Predictor
from tiers.classifier.training import train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from routing_quality import coverage_bound


@pytest.fixture(scope="module")
def open_set() -> tuple[ClassifierModel, list[tuple[str, str | None]]]:
    rows = [(t, lab) for t, lab in make_rows(out_of_scope=0) if lab is not None]
    unseen = sorted({lab for _, lab in rows})[:2]
    model = train([(t, lab) for t, lab in rows if lab not in unseen], target_precision=0.9, class_rounds=0)
    known = sorted({lab for _, lab in rows} - set(unseen))
    judged: list[tuple[str, str | None]] = []
    for number, (text, label) in enumerate(make_rows(seed=5, out_of_scope=0)):
        if label in unseen:
            judged.append((text, None))
        elif number % 15 == 0:  # some rows the model must get wrong, so that precision binds
            judged.append((text, known[(known.index(str(label)) + 1) % len(known)]))
        else:
            judged.append((text, label))
    return model, judged


def brute_force(
    model: ClassifierModel, rows: list[tuple[str, str | None]], target: float, share: float
) -> float:
    predictor = Predictor(model, min_confidence=0.0)
    scored = [(predictor.predict(t), lab) for t, lab in rows]
    known = sum(lab is not None for _, lab in rows)
    unseen = len(rows) - known
    best = 0.0
    for threshold in sorted({p.confidence for p, _ in scored}):
        answered = [(p, lab) for p, lab in scored if p.ahead and p.confidence >= threshold]
        right = sum(p.best == lab for p, lab in answered if lab is not None)
        answered_known = sum(lab is not None for _, lab in answered)
        escalated = unseen - sum(lab is None for _, lab in answered)
        if answered_known and right / answered_known >= target and escalated >= share * unseen - 1e-9:
            best = max(best, answered_known / known)
    return best


@pytest.mark.parametrize(
    ("target", "share"), [(0.9, 0.0), (0.95, 0.0), (0.95, 0.5), (0.9, 0.9), (0.99, 0.9), (0.9, 1.0)]
)
def test_the_bound_is_the_best_threshold(
    open_set: tuple[ClassifierModel, list[tuple[str, str | None]]], target: float, share: float
) -> None:
    model, judged = open_set
    bound = coverage_bound(model, judged, target, share)
    assert bound == pytest.approx(brute_force(model, judged, target, share))


def test_both_promises_bind(open_set: tuple[ClassifierModel, list[tuple[str, str | None]]]) -> None:
    model, judged = open_set
    loose = coverage_bound(model, judged, 0.9)
    assert 0.0 < coverage_bound(model, judged, 0.95) < loose  # the precision asked for
    assert 0.0 < coverage_bound(model, judged, 0.9, 0.9) < loose  # the unseen intents escalated
