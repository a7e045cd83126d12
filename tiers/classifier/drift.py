"""Drift signals of a classifier's traffic, and how far a live window is from training.

Three signals, each a distribution over fixed bins:
- `confidence`: the confidence of each text (10 equal bins over [0, 1]);
- `outcome`: what the model did with each text: the label it answered, `__below__` (not confident
  enough) or `__out_of_scope__`;
- `unseen`: the share of a text's words the model has never seen.
The training baseline is taken from out-of-fold predictions, and a training row's unseen words
are those no other row has (had the row been held out, the vocabulary would lack them), so the
baseline describes new texts of the training kind rather than texts the model has fitted.
PSI (population stability index) compares live and baseline shares; the usual bands: below 0.1
stable, 0.1 to 0.25 moderate, above 0.25 significant."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

CONFIDENCE_EDGES = tuple(i / 10 for i in range(11))
UNSEEN_EDGES = (0.0, 0.05, 0.15, 0.3, 0.5, 1.0)
BELOW = "__below__"
OUT_OF_SCOPE_OUTCOME = "__out_of_scope__"
WORD = re.compile(r"\b\w\w+\b")
EPSILON = 1e-4  # an empty bin counts as this share, so PSI stays finite
MODERATE, SIGNIFICANT = 0.1, 0.25


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def bin_shares(values: Iterable[float], edges: Sequence[float]) -> list[float]:
    counts = [0] * (len(edges) - 1)
    total = 0
    for value in values:
        index = len(edges) - 2
        for i in range(1, len(edges) - 1):
            if value < edges[i]:
                index = i - 1
                break
        counts[index] += 1
        total += 1
    return [c / total for c in counts] if total else [0.0] * len(counts)


def label_shares(outcomes: Iterable[str]) -> dict[str, float]:
    counts = Counter(outcomes)
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def unseen_share(text: str, known: frozenset[str] | Mapping[str, int]) -> float:
    found = words(text)
    return sum(w not in known for w in found) / len(found) if found else 0.0


def psi(
    live: Mapping[str, float] | Sequence[float], baseline: Mapping[str, float] | Sequence[float]
) -> float:
    if isinstance(live, Mapping) and isinstance(baseline, Mapping):
        keys = set(live) | set(baseline)
        pairs = [(live.get(k, 0.0), baseline.get(k, 0.0)) for k in keys]
    else:
        pairs = list(zip(live, baseline, strict=True))  # type: ignore[arg-type]
    total = 0.0
    for actual, expected in pairs:
        a, e = max(actual, EPSILON), max(expected, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def band(value: float) -> str:
    return "significant" if value >= SIGNIFICANT else "moderate" if value >= MODERATE else "stable"


def baseline(
    texts: Sequence[str], confidences: Sequence[float], outcomes: Sequence[str]
) -> dict[str, object]:
    """The training baseline (plain values, kept in the model file's metrics)."""
    document_frequency: Counter[str] = Counter()
    tokenised = [words(t) for t in texts]
    for found in tokenised:
        document_frequency.update(set(found))
    unseen = [
        sum(document_frequency[w] == 1 for w in found) / len(found) if found else 0.0 for found in tokenised
    ]
    return {
        "confidence": bin_shares(confidences, CONFIDENCE_EDGES),
        "outcome": label_shares(outcomes),
        "unseen": bin_shares(unseen, UNSEEN_EDGES),
        "rows": len(texts),
    }
