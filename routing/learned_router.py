"""The learned router: a text model scoring how much a prompt needs the strong model, trained on
rows of `{"prompt", "weak_correct", "strong_correct"}` (see `routing.router_training`), and judged
by APGR and CPT(50%).

APGR is the area under the curve of performance-gap recovered (0 = always the weak model, 1 =
always the strong one) against the share of calls sent to the strong model; a random router
scores about 0.5. CPT(50%) is the smallest share of strong calls that recovers half the gap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiers.classifier.model import ClassifierModel, LeanClassifier
from tiers.types import ChatRequest

STRONG = "strong"
WEAK = "weak"


@dataclass(frozen=True, slots=True)
class RouterRow:
    prompt: str
    weak_correct: bool
    strong_correct: bool


def load_router_rows(path: str | Path) -> list[RouterRow]:
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            try:
                rows.append(
                    RouterRow(str(item["prompt"]), bool(item["weak_correct"]), bool(item["strong_correct"]))
                )
            except KeyError as exc:
                raise ValueError(f"{path}:{number}: missing {exc}") from None
    return rows


class LearnedScorer:
    """Complexity from a learned router: the probability that only the strong model succeeds."""

    def __init__(self, model: ClassifierModel) -> None:
        self._lean: LeanClassifier = model.lean()
        self._strong = model.classes.index(STRONG)

    def score_text(self, text: str) -> float:
        return float(self._lean.probabilities(text)[self._strong])

    def score(self, request: ChatRequest, prompt_tokens: int) -> float:
        return self.score_text(request.last_user_text())


def gap_recovered_curve(scores: Sequence[float], rows: Sequence[RouterRow]) -> tuple[np.ndarray, np.ndarray]:
    """(share of strong calls, performance gap recovered) as the threshold sweeps all scores."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    weak = np.array([r.weak_correct for r in rows], dtype=float)[order]
    strong = np.array([r.strong_correct for r in rows], dtype=float)[order]
    n = len(rows)
    gain = np.concatenate([[0.0], np.cumsum(strong - weak)])  # routing the top k to strong
    quality = (weak.sum() + gain) / n
    weak_only, strong_only = weak.mean(), strong.mean()
    recovered = (quality - weak_only) / (strong_only - weak_only)
    return np.arange(n + 1) / n, recovered


def apgr(scores: Sequence[float], rows: Sequence[RouterRow]) -> float:
    share, recovered = gap_recovered_curve(scores, rows)
    return float(np.sum((recovered[1:] + recovered[:-1]) / 2 * np.diff(share)))


def cpt(scores: Sequence[float], rows: Sequence[RouterRow], target: float = 0.5) -> float:
    share, recovered = gap_recovered_curve(scores, rows)
    reached = np.nonzero(recovered >= target)[0]
    return float(share[reached[0]]) if len(reached) else 1.0
