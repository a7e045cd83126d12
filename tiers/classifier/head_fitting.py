"""Fitting the head over the embeddings (tiers/classifier/head.py serves it): a small network on
the unit embedding whose class scores join the linear model's, counted as much as the out-of-fold
log loss says."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from tiers.classifier.head import DenseHead

# The head over the embeddings (tiers/classifier/head.py): HEAD_UNITS hidden units, L2 strength
# HEAD_ALPHA, HEAD_EPOCHS passes of Adam, fed HEAD_INPUT_SCALE times the unit embedding (whose
# entries are about 0.06; the optimiser's defaults suit inputs near 1). Its scores count
# HEAD_WEIGHTS[i] times, whichever gives the lowest out-of-fold log loss (0: no head).
HEAD_UNITS = 256
HEAD_ALPHA = 0.01
HEAD_EPOCHS = 50
HEAD_INPUT_SCALE = 10.0
HEAD_WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5)


def final_head(
    units: np.ndarray | None, labels: list[str], classes: list[str], seed: int, weight: float
) -> DenseHead | None:
    """The head fitted on all rows, when the out-of-fold weighting kept it."""
    if weight <= 0 or units is None:
        return None
    fitted = fit_head(units, labels, seed)
    if [str(k) for k in fitted.classes_] != classes:
        raise RuntimeError("the head's classes are not in the linear model's order")
    return DenseHead.folded(fitted.coefs_, fitted.intercepts_, HEAD_INPUT_SCALE, weight)


def fit_head(units: np.ndarray, labels: Sequence[str], seed: int) -> MLPClassifier:
    """The head's network, fitted for HEAD_EPOCHS passes (a budget, not a convergence test)."""
    network = MLPClassifier((HEAD_UNITS,), alpha=HEAD_ALPHA, max_iter=HEAD_EPOCHS, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return network.fit((HEAD_INPUT_SCALE * units).astype(np.float32), list(labels))


def combined(linear: np.ndarray, network: np.ndarray | None, weight: float) -> np.ndarray:
    """The linear model's probabilities times the head's to the power `weight`, renormalised."""
    if network is None or weight == 0:
        return linear
    with np.errstate(divide="ignore", invalid="ignore"):  # a row no round held is all zeros
        logits = np.log(linear) + weight * network
        logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities


def head_weight(
    linear: np.ndarray, network: np.ndarray | None, truth: Sequence[int]
) -> tuple[float, np.ndarray]:
    """The weight of HEAD_WEIGHTS whose combined probabilities (the linear model's times the
    head's to that power, renormalised) have the lowest log loss on the true classes, and those
    probabilities. Without a head: 0 and the linear model's."""
    if network is None:
        return 0.0, linear
    rows = np.arange(len(truth))
    best: tuple[float, float, np.ndarray] | None = None
    for weight in HEAD_WEIGHTS:
        probabilities = combined(linear, network, weight)
        loss = float(-np.log(np.maximum(probabilities[rows, truth], 1e-300)).mean())
        if best is None or loss < best[0]:
            best = (loss, weight, probabilities)
    assert best is not None
    return best[1], best[2]
