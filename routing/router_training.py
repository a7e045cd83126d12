"""Training the learned router (scikit-learn), kept apart so that serving never imports it."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from routing.learned_router import STRONG, WEAK, RouterRow
from tiers.classifier.model import ClassifierModel
from tiers.classifier.training import fit_linear, model_of


def train_router(rows: Sequence[RouterRow], c: float = 0.3) -> ClassifierModel:
    """Learns P(only the strong model gets it right) from the prompt: the prompts where a strong
    call buys something. Learning P(the weak model fails) instead would also spend strong calls
    on prompts that both models get wrong."""
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
