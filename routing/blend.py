"""A learned router that knows its domain: as a prompt grows unlike the prompts it was trained on,
its score gives way to the heuristic's.

Novelty is the share of the prompt's words and word pairs the router's vocabulary never saw
(tiers/classifier/tfidf.py). Below `low` the score is the learned router's; above `high` it is
the heuristic's; in between, a mix by how far novelty has come. The heuristic's score is first
put on the learned score's scale (the learned score at the heuristic's percentile among the
training prompts), so that a mix orders prompts sensibly and, in the router's own domain, the
score is exactly the learned router's. `routing/router_training.py` chooses `low` and `high` on
the training rows alone, scoring rows of subjects a fold did not train on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTILES = 101  # the percentiles kept of each score's training distribution


@dataclass(frozen=True)
class Blend:
    low: float  # novelty up to which the learned score stands alone (1.0: never blend)
    high: float  # novelty from which the heuristic's stands alone
    heuristic: np.ndarray  # QUANTILES percentiles of the heuristic's scores on training prompts
    learned: np.ndarray  # the same of the learned router's scores, out of fold

    def weight(self, novelty: float) -> float:
        """The heuristic's share of the score at this novelty (0 to 1)."""
        if novelty <= self.low:
            return 0.0
        if novelty >= self.high:
            return 1.0
        return (novelty - self.low) / (self.high - self.low)

    def on_learned_scale(self, heuristic: float) -> float:
        """The learned score at the heuristic score's percentile among the training prompts."""
        share = np.interp(heuristic, self.heuristic, np.linspace(0.0, 1.0, len(self.heuristic)))
        return float(np.interp(share, np.linspace(0.0, 1.0, len(self.learned)), self.learned))

    def score(self, learned: float, heuristic: float, novelty: float) -> float:
        weight = self.weight(novelty)
        if weight == 0.0:
            return learned
        return (1.0 - weight) * learned + weight * self.on_learned_scale(heuristic)

    def scores(self, learned: np.ndarray, heuristic: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """`score` for many prompts at once."""
        return np.array([self.score(a, b, n) for a, b, n in zip(learned, heuristic, novelty, strict=True)])

    def to_plain(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "heuristic": [float(v) for v in self.heuristic],
            "learned": [float(v) for v in self.learned],
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Blend:
        blend = cls(
            float(plain["low"]),
            float(plain["high"]),
            np.asarray(plain["heuristic"], dtype=float),
            np.asarray(plain["learned"], dtype=float),
        )
        if blend.high <= blend.low or len(blend.heuristic) < 2 or len(blend.learned) < 2:
            raise ValueError(f"a blend from novelty {blend.low} to {blend.high} with too few percentiles")
        return blend

    @classmethod
    def of(cls, low: float, high: float, heuristic: np.ndarray, learned: np.ndarray) -> Blend:
        """A blend keeping the percentiles of the training scores given."""
        points = np.linspace(0.0, 1.0, QUANTILES)
        return cls(low, high, np.quantile(heuristic, points), np.quantile(learned, points))
