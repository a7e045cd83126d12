"""Training the learned router (scikit-learn), kept apart so that serving never imports it."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, KFold

from routing.blend import Blend
from routing.learned_router import STRONG, WEAK, RouterRow, apgr, heuristic_of_prompt
from tiers.classifier.model import ClassifierModel
from tiers.classifier.training import fit_linear, model_of

# Where the blend may begin (percentiles of the rows' novelty out of fold; besides: never, and
# always) and how wide it is (in novelty): the pair with the best APGR out of fold wins.
BLEND_STARTS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
BLEND_WIDTHS = (0.05, 0.1, 0.2, 0.4)
NEVER = 1.0


def train_router(
    rows: Sequence[RouterRow],
    c: float = 0.3,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> ClassifierModel:
    """Learns P(only the strong model gets it right) from the prompt: the prompts where a strong
    call buys something. Learning P(the weak model fails) instead would also spend strong calls
    on prompts that both models get wrong. Then chooses how the score gives way to the heuristic
    as prompts grow unlike the training ones (routing/blend.py), on rows scored out of fold (see
    `choose_blend`)."""
    model = _fit(rows, c)
    blend, figures = choose_blend(rows, c, folds, seed, progress)
    return ClassifierModel(
        **{**model.__dict__, "metrics": {"blend": blend.to_plain(), "blend_choice": figures}}
    )


def _fit(rows: Sequence[RouterRow], c: float) -> ClassifierModel:
    texts = [r.prompt for r in rows]
    labels = [STRONG if r.strong_correct and not r.weak_correct else WEAK for r in rows]
    vectorizers = [
        TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000
        ),
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=3, max_features=200_000
        ),
    ]
    estimator = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    return model_of(*fit_linear(texts, labels, vectorizers, estimator))


def router_folds(
    rows: Sequence[RouterRow], folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Shuffled folds (a fold's prompts are of subjects it also trained on), and folds of whole
    groups (of subjects it never trained on) when every row has a group and there are at least
    `folds` of them; else no such folds."""
    mixed = list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(rows))))
    groups = [r.group for r in rows]
    if any(g is None for g in groups) or len(set(groups)) < folds:
        return mixed, []
    order = sorted({str(g) for g in groups})
    random.Random(seed).shuffle(order)
    rank = {g: k for k, g in enumerate(order)}
    numbers = np.array([rank[str(g)] for g in groups])
    return mixed, list(GroupKFold(folds).split(np.zeros(len(rows)), groups=numbers))


def choose_blend(
    rows: Sequence[RouterRow], c: float, folds: int, seed: int, progress: Callable[[str], None]
) -> tuple[Blend, dict[str, Any]]:
    """The blend with the best APGR on rows scored out of fold, twice when the rows have
    subjects: by shuffled folds (prompts like the training ones) and by folds of unseen subjects;
    the mean of the two APGRs (each the mean over its folds) is what is maximised, so that the
    blend keeps the learned score where it is good and gives way where it is not."""
    mixed, grouped = router_folds(rows, folds, seed)
    kinds = [("mixed", mixed)] + ([("unseen subjects", grouped)] if grouped else [])
    heuristic = np.array([heuristic_of_prompt(r.prompt) for r in rows])
    scored = []
    for kind, splits in kinds:
        learned, novelty = np.zeros(len(rows)), np.zeros(len(rows))
        for number, (fit, held) in enumerate(splits, 1):
            lean = _fit([rows[i] for i in fit], c).lean()
            strong = lean.classes.index(STRONG)
            for i in held:
                probabilities, unseen = lean.scores(rows[i].prompt)
                learned[i], novelty[i] = probabilities[strong], unseen.words
            progress(f"{kind} fold {number}/{len(splits)} scored ({len(held)} rows)")
        scored.append((splits, learned, novelty))
    everything = np.concatenate([novelty for _, _, novelty in scored])

    def mean_apgr(values: list[np.ndarray]) -> float:
        return float(
            np.mean(
                [
                    np.mean([apgr(v[held], [rows[i] for i in held]) for _, held in splits])
                    for (splits, _, _), v in zip(scored, values, strict=True)
                ]
            )
        )

    candidates = [(NEVER, NEVER + 1.0), (-1.0, -0.5)] + [
        (float(start), float(start) + width)
        for start in np.quantile(everything, BLEND_STARTS)
        for width in BLEND_WIDTHS
    ]
    best: tuple[float, Blend] | None = None
    for low, high in candidates:
        blend = Blend.of(low, high, heuristic, scored[0][1])
        mean = mean_apgr([blend.scores(learned, heuristic, novelty) for _, learned, novelty in scored])
        if best is None or mean > best[0] + 1e-9:
            best = (mean, blend)
    assert best is not None
    blend = best[1]
    figures: dict[str, Any] = {"folds": folds, "grouped": bool(grouped), "apgr_blended": best[0]}
    figures["apgr_learned"] = mean_apgr([learned for _, learned, _ in scored])
    figures["apgr_heuristic"] = mean_apgr([heuristic for _ in scored])
    progress(
        f"blend from novelty {blend.low:.3f} to {blend.high:.3f}:"
        f" APGR out of fold {figures['apgr_blended']:.4f}"
        f" (learned alone {figures['apgr_learned']:.4f}, heuristic {figures['apgr_heuristic']:.4f})"
    )
    return blend, figures
