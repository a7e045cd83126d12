"""How likely the classifier's label is to be right: a small logistic model over the shape of the
class probabilities (top, runner-up, their margin and log ratio, entropy), the text's length and
the label itself, fitted on out-of-fold predictions when the classifier is trained.

The label's own term matters most: some labels are rarely confused, others (paraphrases of each
other in the data) often, and one threshold over the margin alone answers the second kind too
readily and the first too cautiously. Its output is the tier's confidence, a probability that the
answer is right, and the threshold is calibrated on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The order of `signals`: a model file names them, and loading checks the names.
SIGNALS = ("margin", "log_ratio", "top", "runner_up", "entropy", "log_words")
_TINY = 1e-9


@dataclass(frozen=True, slots=True)
class Summary:
    """What the classifier reports of one text's class probabilities."""

    best: int  # the most likely in-scope class
    top: float  # its probability
    runner_up: float  # the largest other probability (the out-of-scope class's included)
    entropy: float  # of all the probabilities, in nats

    @property
    def ahead(self) -> bool:
        """The best in-scope class leads every other one (the out-of-scope class included)."""
        return self.top > self.runner_up


def signals(summary: Summary, words: int) -> tuple[float, ...]:
    """The features the reliability model weighs, in the order of SIGNALS."""
    top, runner = summary.top, summary.runner_up
    return (
        top - runner,
        math.log(top + _TINY) - math.log(runner + _TINY),
        top,
        runner,
        summary.entropy,
        math.log1p(words),
    )


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Reliability:
    """A fitted logistic model: P(right) = sigmoid(intercept + label_bias[best] + weights . signals)."""

    weights: tuple[float, ...]  # one per signal
    label_bias: tuple[float, ...]  # one per class
    intercept: float

    def probability(self, summary: Summary, words: int) -> float:
        z = self.intercept + self.label_bias[summary.best]
        for weight, value in zip(self.weights, signals(summary, words), strict=True):
            z += weight * value
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def to_plain(self) -> dict[str, Any]:
        return {
            "signals": list(SIGNALS),
            "weights": list(self.weights),
            "label_bias": list(self.label_bias),
            "intercept": self.intercept,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], classes: int) -> Reliability:
        if list(plain["signals"]) != list(SIGNALS):
            raise ValueError(f"reliability signals {plain['signals']}, this version weighs {list(SIGNALS)}")
        weights = tuple(float(w) for w in plain["weights"])
        bias = tuple(float(b) for b in plain["label_bias"])
        if len(weights) != len(SIGNALS) or len(bias) != classes:
            raise ValueError(
                f"reliability of {len(weights)} weights and {len(bias)} label biases for"
                f" {len(SIGNALS)} signals and {classes} classes"
            )
        return cls(weights, bias, float(plain["intercept"]))


def confidence(reliability: Reliability | None, summary: Summary, text: str) -> float:
    """The classifier's confidence in its best label for `text`: the reliability model's
    probability, or without one the margin (the best label's probability minus the runner-up's)."""
    if reliability is None:
        return summary.top - summary.runner_up
    return reliability.probability(summary, word_count(text))


def confidence_kind(reliability: Reliability | None) -> str:
    """What a model's confidence is, as reports name it: "reliability" or "margin"."""
    return "margin" if reliability is None else "reliability"
