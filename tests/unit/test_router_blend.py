"""A learned router gives way to the heuristic as prompts grow unlike its training ones: the blend
(routing/blend.py), and its choice on folds of unseen subjects (routing/router_training.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from routing.blend import Blend
from routing.learned_router import LearnedScorer, RouterRow, apgr, heuristic_of_prompt
from routing.router_training import train_router
from tiers.types import ChatRequest, Message


def test_the_blend_moves_from_the_learned_score_to_the_heuristics() -> None:
    heuristic = np.linspace(0.0, 0.5, 200)  # the heuristic's training scores: 0 to 0.5
    learned = np.linspace(0.2, 0.8, 200)  # the learned router's: 0.2 to 0.8
    blend = Blend.of(0.3, 0.5, heuristic, learned)
    assert blend.score(0.7, 0.0, novelty=0.1) == 0.7  # familiar: the learned score alone
    assert blend.score(0.7, 0.25, novelty=0.9) == pytest.approx(0.5, abs=0.01)  # the median on both scales
    assert blend.score(0.7, 0.5, novelty=0.9) == pytest.approx(0.8, abs=0.01)
    halfway = blend.score(0.7, 0.25, novelty=0.4)
    assert halfway == pytest.approx(0.6, abs=0.01)
    assert Blend.from_plain(blend.to_plain()).score(0.7, 0.25, 0.4) == pytest.approx(halfway)
    with pytest.raises(ValueError, match="blend"):
        Blend.from_plain({**blend.to_plain(), "high": 0.2})


def subject_rows(subjects: range, per_subject: int, seed: int) -> list[RouterRow]:
    """Prompts of made-up subjects: each subject's hard prompts carry a word of its own (which a
    router trained on the subject learns), and most hard prompts, of any subject, are long (which
    the heuristic sees, and TF-IDF's normalised vectors do not). The weak model fails hard prompts
    more often."""
    rng = random.Random(seed)
    rows = []
    for subject in subjects:
        words = random.Random(subject)  # the subject's own made-up words

        def word(_: int) -> str:
            return "".join(words.choice("bcdfghjklmnpqrstvwxz") for _ in range(8))  # noqa: B023

        topic = " ".join(map(word, range(4)))
        tricky, plain = word(0), word(1)
        for _ in range(per_subject):
            hard = rng.random() < 0.4
            long = rng.random() < (0.7 if hard else 0.1)
            marker = tricky if hard else plain
            prompt = f"{(topic + ' ') * (40 if long else 1)}{marker} {rng.random():.6f}"
            weak = rng.random() < (0.2 if hard else 0.9)
            rows.append(RouterRow(prompt, weak, rng.random() < 0.95, f"s{subject}"))
    return rows


def test_outside_its_subjects_the_router_does_no_worse_than_the_heuristic() -> None:
    model = train_router(subject_rows(range(10), 60, seed=1))
    choice = model.metrics["blend_choice"]
    assert choice["grouped"] and choice["apgr_blended"] > choice["apgr_learned"]
    scorer = LearnedScorer(model)

    def scores(rows: list[RouterRow]) -> tuple[list[float], list[float], list[float]]:
        requests = [ChatRequest(model="m", messages=[Message(role="user", content=r.prompt)]) for r in rows]
        own = [scorer.score(q, len(r.prompt) // 4) for q, r in zip(requests, rows, strict=True)]
        return own, [scorer.score_text(r.prompt) for r in rows], [heuristic_of_prompt(r.prompt) for r in rows]

    unseen = subject_rows(range(20, 25), 80, seed=2)
    own, alone, heuristic = scores(unseen)
    assert apgr(own, unseen) >= apgr(heuristic, unseen) - 0.01
    assert apgr(own, unseen) > apgr(alone, unseen) + 0.05
    familiar = subject_rows(range(10), 30, seed=3)  # new prompts of the subjects it knows
    own, alone, heuristic = scores(familiar)
    assert apgr(alone, familiar) > apgr(heuristic, familiar)
    assert apgr(own, familiar) >= apgr(alone, familiar) - 0.02  # the blend costs little at home
