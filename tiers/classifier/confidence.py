"""How likely the classifier's label is to be right: a small logistic model over the shape of the
class probabilities (top, runner-up, their margin and log ratio, entropy), the text's length, how
much of the text training never saw (the share of its words and of its character n-grams out of
the vocabulary), how close it comes to the label's nearest training row
(tiers/classifier/neighbours.py) and the label itself, fitted when the classifier is trained on rows scored by
models that did not see them: out-of-fold rows of known labels, and rows of whole labels held out
(tiers/classifier/folds.py), which teach it what a query of an unseen intent looks like.

The label's own term matters most: some labels are rarely confused, others (paraphrases of each
other in the data) often, and one threshold over the margin alone answers the second kind too
readily and the first too cautiously. Its output is the tier's confidence, a probability that the
answer is right, and the threshold is calibrated on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The order of `signals`: a model file names them, and loading checks the names. Models of format
# 4 and 5 weigh the first six.
SIGNALS = (
    "margin",
    "log_ratio",
    "top",
    "runner_up",
    "entropy",
    "log_words",
    "unseen_words",
    "unseen_chars",
    "neighbour",
    "neighbour_embedding",
)
_TINY = 1e-9
# Why a text escalates, by the kind of signal that pulls its confidence down most (see
# `Reliability.reason`); the escalation reason and the decision record say it.
REASONS = {
    "margin": "ambiguous between labels",
    "log_ratio": "ambiguous between labels",
    "top": "ambiguous between labels",
    "runner_up": "ambiguous between labels",
    "entropy": "ambiguous between labels",
    "log_words": "the text's length",
    "unseen_words": "words and spellings never seen in training",
    "unseen_chars": "words and spellings never seen in training",
    "neighbour": "unlike any training example of the label",
    "neighbour_embedding": "unlike any training example of the label",
    "label": "a label often confused with others",
}


@dataclass(frozen=True, slots=True)
class Summary:
    """What the classifier reports of one text's class probabilities."""

    best: int  # the most likely in-scope class
    top: float  # its probability
    runner_up: float  # the largest other probability (the out-of-scope class's included)
    entropy: float  # of all the probabilities, in nats
    unseen_words: float = 0.0  # share of the text's words and word n-grams out of the vocabulary
    unseen_chars: float = 0.0  # share of its character n-grams out of the vocabulary
    neighbour: float = 0.0  # cosine similarity to the best class's nearest training row (TF-IDF)
    neighbour_embedding: float = 0.0  # the same with embeddings (0 without)

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
        summary.unseen_words,
        summary.unseen_chars,
        summary.neighbour,
        summary.neighbour_embedding,
    )


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Reliability:
    """A fitted logistic model: P(right) = sigmoid(intercept + label_bias[best] + weights . signals)."""

    weights: tuple[float, ...]  # one per signal of SIGNALS (the first six, in older models)
    label_bias: tuple[float, ...]  # one per class
    intercept: float
    # each signal's mean over the calibration's right answers (and the label term's): what an
    # answer the model gets right looks like, for saying why a text escalates; () in older models
    typical: tuple[float, ...] = ()

    def reason(self, summary: Summary, words: int) -> str | None:
        """What most pulls this text's confidence below that of a typical right answer, in words
        (None without `typical`): the signals' contributions, weight times distance from typical,
        summed by kind (REASONS), the most negative kind named."""
        if len(self.typical) != len(self.weights) + 1:
            return None
        values = signals(summary, words)
        pulls: dict[str, float] = {}
        for name, weight, value, usual in zip(SIGNALS, self.weights, values, self.typical, strict=False):
            kind = REASONS[name]
            pulls[kind] = pulls.get(kind, 0.0) + weight * (value - usual)
        pulls[REASONS["label"]] = self.label_bias[summary.best] - self.typical[-1]
        kind, pull = min(pulls.items(), key=lambda item: item[1])
        return kind if pull < 0 else None

    def probability(self, summary: Summary, words: int) -> float:
        z = self.intercept + self.label_bias[summary.best]
        for weight, value in zip(self.weights, signals(summary, words), strict=False):
            z += weight * value
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def to_plain(self) -> dict[str, Any]:
        return {
            "signals": list(SIGNALS[: len(self.weights)]),
            "weights": list(self.weights),
            "label_bias": list(self.label_bias),
            "intercept": self.intercept,
            "typical": list(self.typical),
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], classes: int) -> Reliability:
        names = list(plain["signals"])
        if names not in (list(SIGNALS), list(SIGNALS[:6])):
            raise ValueError(f"reliability signals {names}, this version weighs {list(SIGNALS)}")
        weights = tuple(float(w) for w in plain["weights"])
        bias = tuple(float(b) for b in plain["label_bias"])
        if len(weights) != len(names) or len(bias) != classes:
            raise ValueError(
                f"reliability of {len(weights)} weights and {len(bias)} label biases for"
                f" {len(names)} signals and {classes} classes"
            )
        typical = tuple(float(t) for t in plain.get("typical", ()))
        if typical and len(typical) != len(weights) + 1:
            raise ValueError(f"{len(typical)} typical values for {len(weights)} signals and the label")
        return cls(weights, bias, float(plain["intercept"]), typical)


def confidence(reliability: Reliability | None, summary: Summary, text: str) -> float:
    """The classifier's confidence in its best label for `text`: the reliability model's
    probability, or without one the margin (the best label's probability minus the runner-up's)."""
    if reliability is None:
        return summary.top - summary.runner_up
    return reliability.probability(summary, word_count(text))


def confidence_kind(reliability: Reliability | None) -> str:
    """What a model's confidence is, as reports name it: "reliability" or "margin"."""
    return "margin" if reliability is None else "reliability"
