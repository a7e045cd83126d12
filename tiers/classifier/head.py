"""A small network over a text's embedding whose class scores join the linear model's.

The linear model weighs the embedding's dimensions one by one; a hidden layer (ReLU) sees their
combinations, which separates paraphrased intents that share their words. Its scores are added to
the linear model's logits, times a weight chosen out of fold when the model is trained (so the
class probabilities are the linear model's times the network's to that power, renormalised).

Stored with its input scale and weight folded into the arrays, so serving is two small products:
hidden = max(0, unit @ hidden_weights + hidden_bias), scores = hidden @ out_weights + out_bias.
The compiled kernel (tiers/classifier/_lean.c) computes the same; this is the NumPy reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DenseHead:
    hidden_weights: np.ndarray  # dims x hidden, float32
    hidden_bias: np.ndarray  # hidden, float32
    out_weights: np.ndarray  # hidden x classes, float32
    out_bias: np.ndarray  # classes, float64

    def scores(self, unit: np.ndarray) -> np.ndarray:
        """The head's class scores for a text's unit embedding (zeros for a text without words)."""
        hidden = np.maximum(unit.astype(np.float32) @ self.hidden_weights + self.hidden_bias, 0.0)
        scores: np.ndarray = (hidden @ self.out_weights).astype(np.float64) + self.out_bias
        return scores

    @classmethod
    def folded(
        cls, coefs: list[np.ndarray], intercepts: list[np.ndarray], input_scale: float, weight: float
    ) -> DenseHead:
        """From a fitted one-hidden-layer network (scikit-learn's `coefs_`, `intercepts_`) fed
        `input_scale` times the unit embedding, its scores counted `weight` times. A two-class
        network's single logit becomes the scores (0, logit), as the linear model's does."""
        if len(coefs) != 2 or len(intercepts) != 2:
            raise ValueError(f"a head has one hidden layer, not {len(coefs) - 1}")
        out_weights, out_bias = np.asarray(coefs[1], np.float64), np.asarray(intercepts[1], np.float64)
        if out_weights.shape[1] == 1:
            out_weights = np.hstack([np.zeros_like(out_weights), out_weights])
            out_bias = np.concatenate([[0.0], out_bias])
        return cls(
            hidden_weights=np.ascontiguousarray(input_scale * np.asarray(coefs[0]), dtype=np.float32),
            hidden_bias=np.ascontiguousarray(intercepts[0], dtype=np.float32),
            out_weights=np.ascontiguousarray(weight * out_weights, dtype=np.float32),
            out_bias=np.ascontiguousarray(weight * out_bias, dtype=np.float64),
        )

    def to_plain(self) -> dict[str, Any]:
        return {
            "hidden_weights": self.hidden_weights,
            "hidden_bias": self.hidden_bias,
            "out_weights": self.out_weights,
            "out_bias": self.out_bias,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], dims: int, classes: int) -> DenseHead:
        head = cls(
            hidden_weights=np.ascontiguousarray(plain["hidden_weights"], dtype=np.float32),
            hidden_bias=np.ascontiguousarray(plain["hidden_bias"], dtype=np.float32),
            out_weights=np.ascontiguousarray(plain["out_weights"], dtype=np.float32),
            out_bias=np.ascontiguousarray(plain["out_bias"], dtype=np.float64),
        )
        hidden = head.hidden_bias.shape[0] if head.hidden_bias.ndim == 1 else -1
        if (
            hidden < 1
            or head.hidden_weights.shape != (dims, hidden)
            or head.out_weights.shape != (hidden, classes)
            or head.out_bias.shape != (classes,)
        ):
            raise ValueError(
                f"a head of {head.hidden_weights.shape}, {head.hidden_bias.shape},"
                f" {head.out_weights.shape} and {head.out_bias.shape} for {dims} dimensions and"
                f" {classes} classes"
            )
        return head
