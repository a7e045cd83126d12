"""How well a classifier model answers: coverage and accuracy at its threshold, out-of-scope
escalation, the curve over thresholds, and the threshold that reaches a target precision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tiers.classifier.confidence import confidence_kind
from tiers.classifier.embeddings import StaticEmbeddings
from tiers.classifier.model import OUT_OF_SCOPE, ClassifierModel, Prediction, Predictor
from tiers.classifier.rows import Row

CURVE_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


# The confidence level of the interval a promised precision is calibrated to (its lower bound).
CONFIDENCE_LEVEL = 0.95
_Z = {0.9: 1.6449, 0.95: 1.9600, 0.99: 2.5758}


def wilson(hits: float, n: float, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion of `hits` in `n` (both may be weighted counts:
    pass the effective sample size as `n`); (0, 1) with no observations."""
    if n <= 0:
        return 0.0, 1.0
    z = _Z[level]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def calibrate_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target: float,
    weights: Sequence[float] | None = None,
    level: float | None = CONFIDENCE_LEVEL,
) -> float:
    """The lowest threshold whose answered items (confidence >= it) reach the target precision,
    taking the largest such set; 1.0 (answer nothing) when no set reaches it. With `level`, the
    lower bound of the precision's Wilson interval must reach the target, not the point estimate
    (`weights` count each item; the interval uses their effective sample size)."""
    values = np.asarray(confidences, dtype=float)
    order = np.argsort(-values, kind="stable")
    w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=float)[order]
    hits = np.cumsum(np.asarray(correct, dtype=float)[order] * w)
    total = np.cumsum(w)
    precision = hits / np.maximum(total, 1e-300)
    if level is None:
        passing = precision >= target
    else:
        n = total * total / np.maximum(np.cumsum(w * w), 1e-300)  # effective sample size
        z = _Z[level]
        centre = (precision + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(precision * (1 - precision) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        passing = centre - half >= target
    ok = np.nonzero(passing)[0]
    if len(ok) == 0:
        return 1.0
    return float(values[order][ok[-1]])


def evaluate(
    model: ClassifierModel,
    rows: Sequence[Row],
    min_confidence: float | None = None,
    embeddings: StaticEmbeddings | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy, coverage and accuracy at the threshold, out-of-scope escalation, and the curve."""
    predictor = Predictor(model, min_confidence, embeddings)
    figures = report(
        [predictor.predict(text) for text, _ in rows], [lab for _, lab in rows], predictor.threshold
    )
    figures["confidence"] = confidence_kind(model.reliability)
    return figures


def report(
    predictions: Sequence[Prediction], labels: Sequence[str | None], threshold: float
) -> dict[str, Any]:
    """The figures of `evaluate` for predictions made at `threshold` (None labels: out of scope)."""
    in_scope = [(p, lab) for p, lab in zip(predictions, labels, strict=True) if lab is not None]
    oos = [p for p, lab in zip(predictions, labels, strict=True) if lab is None]
    answered = [(p, lab) for p, lab in in_scope if not p.escalate]
    curve = []
    for t in CURVE_THRESHOLDS:
        kept = [(p, lab) for p, lab in in_scope if p.confidence >= t and p.best != OUT_OF_SCOPE]
        curve.append(
            {
                "threshold": t,
                "coverage": len(kept) / len(in_scope) if in_scope else 0.0,
                "accuracy": sum(p.best == lab for p, lab in kept) / len(kept) if kept else 1.0,
            }
        )
    return {
        "rows": len(predictions),
        "threshold": threshold,
        "top1_accuracy": sum(p.best == lab for p, lab in in_scope) / len(in_scope) if in_scope else 0.0,
        "coverage": len(answered) / len(in_scope) if in_scope else 0.0,
        "accuracy_answered": sum(p.label == lab for p, lab in answered) / len(answered) if answered else 1.0,
        "out_of_scope_rows": len(oos),
        "out_of_scope_escalated": sum(p.escalate for p in oos) / len(oos) if oos else None,
        "curve": curve,
    }
