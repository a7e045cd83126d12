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

from routing.blend import Blend
from routing.complexity import HeuristicScorer
from tiers.classifier.model import ClassifierModel, LeanClassifier
from tiers.types import ChatRequest, Message

STRONG = "strong"
WEAK = "weak"


@dataclass(frozen=True, slots=True)
class RouterRow:
    prompt: str
    weak_correct: bool
    strong_correct: bool
    group: str | None = None  # the row's subject or domain (`subject` or `group`), if given


def load_router_rows(path: str | Path) -> list[RouterRow]:
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            try:
                group = item.get("group", item.get("subject"))
                rows.append(
                    RouterRow(
                        str(item["prompt"]),
                        bool(item["weak_correct"]),
                        bool(item["strong_correct"]),
                        None if group is None else str(group),
                    )
                )
            except KeyError as exc:
                raise ValueError(f"{path}:{number}: missing {exc}") from None
    return rows


def heuristic_of_prompt(prompt: str) -> float:
    """The heuristic complexity score of a prompt sent alone (its tokens taken as 4 characters)."""
    request = ChatRequest(model="auto", messages=[Message(role="user", content=prompt)])
    return HeuristicScorer().score(request, len(prompt) // 4)


class LearnedScorer:
    """Complexity from a learned router: the probability that only the strong model succeeds,
    giving way to the heuristic's score as the prompt grows unlike the router's training prompts
    (routing/blend.py; routers trained before the blend score with the learned model alone)."""

    def __init__(self, model: ClassifierModel, heuristic: HeuristicScorer | None = None) -> None:
        self._lean: LeanClassifier = model.lean()
        self._strong = model.classes.index(STRONG)
        plain = model.metrics.get("blend")
        self._blend = None if plain is None else Blend.from_plain(plain)
        self._heuristic = heuristic or HeuristicScorer()

    def score_text(self, text: str) -> float:
        """The learned model's own score, before any blend."""
        return float(self._lean.probabilities(text)[self._strong])

    def score(self, request: ChatRequest, prompt_tokens: int) -> float:
        text = request.last_user_text()
        if self._blend is None:
            return self.score_text(text)
        probabilities, unseen = self._lean.scores(text)
        learned = float(probabilities[self._strong])
        if self._blend.weight(unseen.words) == 0.0:
            return learned
        return self._blend.score(learned, self._heuristic.score(request, prompt_tokens), unseen.words)


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
