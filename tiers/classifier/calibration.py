"""The confidence model and the threshold, from rows scored by models that did not see them
(tiers/classifier/training.py scores them): rows of known labels scored out of fold, right or
wrong, and rows of held-out labels, every answer to which is wrong. The threshold keeps two
promises, each to a lower confidence bound: the precision of what is answered (Wilson) and the
share of an unseen intent's queries that escalate (Student's t over labels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression

from tiers.classifier.confidence import (
    SIGNALS,
    Reliability,
    Summary,
    confidence,
    confidence_kind,
    signals,
    word_count,
)
from tiers.classifier.drift import BELOW, OUT_OF_SCOPE_OUTCOME
from tiers.classifier.drift import baseline as drift_baseline
from tiers.classifier.evaluation import CONFIDENCE_LEVEL, calibrate_threshold, report, wilson
from tiers.classifier.model import OUT_OF_SCOPE, Prediction

# The held-out labels' rows weigh this share of all rows when the confidence model is fitted.
UNSEEN_WEIGHT = 0.25
# Thresholds tried for the promise on unseen intents (quantiles of the held-out rows' confidences).
ESCALATION_GRID = 2000


@dataclass(frozen=True)
class Calibration:
    reliability: Reliability | None
    threshold: float
    metrics: dict[str, Any]


def calibrate(
    out_of_fold: list[Summary],
    held_out: list[Summary],
    held_rows: np.ndarray,
    texts: list[str],
    labels: list[str],
    classes: list[str],
    target: float,
    unseen_escalation: float,
    bound: bool = True,
) -> Calibration:
    """The confidence model, fitted on the rows scored out of fold (right or wrong) and on the
    rows of held-out labels (every answer to them wrong; together weighted as UNSEEN_WEIGHT of
    the whole), and the threshold that keeps both promises (see `train`). Rows the out-of-scope
    class claims are never answered whatever the threshold: both are fitted on the rest."""
    correct = [classes[s.best] == y for s, y in zip(out_of_fold, labels, strict=True)]
    summaries = out_of_fold + held_out
    all_texts = texts + [texts[i] for i in held_rows]
    truth = correct + [False] * len(held_out)
    weight = UNSEEN_WEIGHT / (1.0 - UNSEEN_WEIGHT) * len(out_of_fold) / len(held_out) if held_out else 0.0
    weights = np.array([1.0] * len(out_of_fold) + [weight] * len(held_out))
    answerable = [i for i, s in enumerate(summaries) if s.ahead]
    reliability = fit_reliability(
        [summaries[i] for i in answerable],
        [word_count(all_texts[i]) for i in answerable],
        [truth[i] for i in answerable],
        len(classes),
        weights[answerable],
    )
    confidences = [confidence(reliability, s, t) for s, t in zip(summaries, all_texts, strict=True)]
    known = [i for i in answerable if i < len(out_of_fold)]
    threshold = calibrate_threshold(
        [confidences[i] for i in known],
        [truth[i] for i in known],
        target,
        level=CONFIDENCE_LEVEL if bound else None,
    )
    held_labels = [labels[i] for i in held_rows]
    if held_out and unseen_escalation > 0:
        threshold = max(
            threshold,
            escalation_threshold(
                confidences[len(out_of_fold) :], held_out, held_labels, unseen_escalation, bound
            ),
        )
    metrics = _metrics(out_of_fold, confidences[: len(out_of_fold)], texts, labels, classes, threshold)
    metrics["confidence"] = confidence_kind(reliability)
    answered = [s.ahead and score >= threshold for s, score in zip(summaries, confidences, strict=True)]
    metrics["promise"] = promise(
        answered[: len(out_of_fold)], correct, answered[len(out_of_fold) :], held_labels, target
    ) | {
        "coverage": metrics["coverage"],
        "unseen_target": unseen_escalation if held_out else None,
        "bound": bound,
    }
    return Calibration(reliability, threshold, metrics)


def _metrics(
    out_of_fold: list[Summary],
    confidences: list[float],
    texts: list[str],
    labels: list[str],
    classes: list[str],
    threshold: float,
) -> dict[str, Any]:
    """The out-of-fold figures at the threshold (evaluation.report) and the drift baseline."""
    metrics = report(
        [
            Prediction.at(classes[s.best], score, threshold, s.ahead)
            for s, score in zip(out_of_fold, confidences, strict=True)
        ],
        [None if y == OUT_OF_SCOPE else y for y in labels],
        threshold,
    )
    outcomes = [
        OUT_OF_SCOPE_OUTCOME if not s.ahead else classes[s.best] if score >= threshold else BELOW
        for s, score in zip(out_of_fold, confidences, strict=True)
    ]
    metrics["baseline"] = drift_baseline(texts, confidences, outcomes)
    return metrics


def escalation_threshold(
    confidences: Sequence[float],
    summaries: Sequence[Summary],
    labels: Sequence[str],
    share: float,
    bound: bool = True,
) -> float:
    """The lowest threshold at which the lower bound of the 95 % interval of the expected share
    of an unseen intent's queries escalated reaches `share` (without `bound`: the mean itself),
    judged on the held-out labels' rows. The interval is over labels, not rows: an intent's
    queries escalate or not together, so the rows of one label are not independent evidence."""
    candidates = np.unique(np.concatenate([[0.0], np.asarray(confidences, dtype=float)]))
    if len(candidates) > ESCALATION_GRID:
        candidates = np.unique(np.quantile(candidates, np.linspace(0.0, 1.0, ESCALATION_GRID)))
    escalated = _escalated_by_label(confidences, summaries, labels, candidates)
    low = np.array([label_interval(column)[0] if bound else column.mean() for column in escalated.T])
    passing = np.nonzero(low >= share)[0]
    return float(np.nextafter(candidates[passing[0]], np.inf)) if len(passing) else 1.0


def _escalated_by_label(
    confidences: Sequence[float], summaries: Sequence[Summary], labels: Sequence[str], thresholds: np.ndarray
) -> np.ndarray:
    """labels x thresholds: the share of each label's rows escalated at each threshold, a row
    escalating when its confidence is at or below it (just above it answers) or the out-of-scope
    class claims it."""
    by_label: dict[str, list[float]] = {}
    for value, summary, label in zip(confidences, summaries, labels, strict=True):
        by_label.setdefault(label, []).append(value if summary.ahead else -np.inf)
    rows = []
    for values in by_label.values():
        ordered = np.sort(np.asarray(values))
        rows.append(np.searchsorted(ordered, thresholds, side="right") / len(ordered))
    return np.array(rows)


def label_interval(shares: np.ndarray) -> tuple[float, float]:
    """The 95 % interval (Student's t) of the mean of per-label shares."""
    count = len(shares)
    mean = float(np.mean(shares))
    if count < 2:
        return 0.0, 1.0
    half = float(stats.t.ppf(0.975, count - 1) * np.std(shares, ddof=1) / np.sqrt(count))
    return max(0.0, mean - half), min(1.0, mean + half)


def promise(
    answered: Sequence[bool],
    correct: Sequence[bool],
    unseen_answered: Sequence[bool],
    unseen_labels: Sequence[str],
    target: float,
) -> dict[str, Any]:
    """What a threshold promises, from the calibration rows: the precision of what it answers of
    the rows scored out of fold with its 95 % Wilson interval, and the share of held-out labels'
    rows it escalates (None without class rounds) with the 95 % interval over labels."""
    hits = sum(a and c for a, c in zip(answered, correct, strict=True))
    total = sum(answered)
    by_label: dict[str, list[bool]] = {}
    for was_answered, label in zip(unseen_answered, unseen_labels, strict=True):
        by_label.setdefault(label, []).append(not was_answered)
    shares = np.array([np.mean(escalated) for escalated in by_label.values()])
    return {
        "target": target,
        "precision": hits / total if total else 1.0,
        "interval": list(wilson(hits, total)),
        "unseen_escalated": 1.0 - sum(unseen_answered) / len(unseen_answered) if unseen_answered else None,
        "unseen_interval": list(label_interval(shares)) if unseen_answered else None,
        "unseen_rows": len(unseen_answered),
        "unseen_labels": len(by_label),
    }


def fit_reliability(
    summaries: Sequence[Summary],
    words: Sequence[int],
    correct: Sequence[bool],
    classes: int,
    weights: np.ndarray | None = None,
) -> Reliability | None:
    """The confidence model (tiers/classifier/confidence.py) fitted on out-of-fold predictions, or
    None when they are all right or all wrong (nothing to tell apart; the margin is the confidence
    then). L2 strength C = 1."""
    if len(set(correct)) < 2:
        return None
    onehot = np.zeros((len(summaries), classes))
    onehot[np.arange(len(summaries)), [s.best for s in summaries]] = 1.0
    x = np.hstack([np.array([signals(s, n) for s, n in zip(summaries, words, strict=True)]), onehot])
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit(
        x, np.asarray(correct, dtype=int), sample_weight=weights
    )
    coef = fitted.coef_[0]
    right = np.asarray(correct, dtype=bool)
    typical = x[right, : len(SIGNALS)].mean(axis=0)
    label_term = float(
        (coef[len(SIGNALS) :][[s.best for s, ok in zip(summaries, right, strict=True) if ok]]).mean()
    )
    return Reliability(
        weights=tuple(float(w) for w in coef[: len(SIGNALS)]),
        label_bias=tuple(float(b) for b in coef[len(SIGNALS) :]),
        intercept=float(fitted.intercept_[0]),
        typical=(*(float(t) for t in typical), label_term),
    )


def promise_summary(threshold: float, promise: dict[str, Any]) -> str:
    """A threshold and its promise in one line, as training reports it."""
    low, high = promise["interval"]
    line = (
        f"threshold {threshold:.4f}: precision {promise['precision']:.4f} (95 % interval"
        f" {low:.4f}-{high:.4f}), coverage {promise['coverage']:.4f}"
    )
    if promise["unseen_escalated"] is not None:
        line += f", unseen intents escalated {promise['unseen_escalated']:.4f}"
    return line
