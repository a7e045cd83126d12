"""The classifier tier: a scikit-learn model (word and character TF-IDF, logistic regression)
answering with a label when it is confident enough, escalating otherwise.

A fitted scikit-learn pipeline takes milliseconds for one text; serving goes through a lean path
that computes the same probabilities from the fitted parts (vocabularies, idf weights,
coefficients) with a dictionary walk and one small matrix product, in tens of microseconds.
Model files are pickles (joblib): load only models you trained or trust.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from tiers.base import TierRequest
from tiers.types import Answer, Escalate

ARTIFACT_FORMAT = 1
OUT_OF_SCOPE = "__out_of_scope__"
# Texts longer than this are scored in a worker thread so the event loop never waits on them.
INLINE_CHARS = 2000


class ModelError(Exception):
    """A model file that cannot be used: missing, not a tiergate model, or from another version."""


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str | None  # None: out of scope, or not confident enough
    confidence: float
    escalate: bool
    best: str  # the most likely in-scope label, even when escalating


@dataclass(frozen=True, slots=True)
class _LeanVectorizer:
    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    sublinear: bool
    offset: int


class LeanClassifier:
    """The fitted model's probabilities without scikit-learn's per-call overhead."""

    def __init__(
        self, vectorizers: Sequence[Any], coef: np.ndarray, intercept: np.ndarray, classes: list[str]
    ):
        offset = 0
        parts = []
        for vec in vectorizers:
            parts.append(
                _LeanVectorizer(
                    vec.build_analyzer(), dict(vec.vocabulary_), vec.idf_, vec.sublinear_tf, offset
                )
            )
            offset += len(vec.vocabulary_)
        self._parts = tuple(parts)
        if coef.shape[0] == 1:  # binary: sklearn's sigmoid equals a softmax over (0, logit)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        self._weights = np.ascontiguousarray(coef.T)  # features x classes
        self._intercept = intercept.astype(np.float64)
        self.classes = classes

    def probabilities(self, text: str) -> np.ndarray:
        ids: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for part in self._parts:
            # map and Counter both run in C: feature ids of the text's tokens, counted
            found: Counter[int | None] = Counter(map(part.vocabulary.get, part.analyzer(text)))
            found.pop(None, None)
            if not found:
                continue
            size = len(found)
            features = np.fromiter(found.keys(), dtype=np.intp, count=size)  # type: ignore[arg-type]
            tf = np.fromiter(found.values(), dtype=np.float64, count=size)
            if part.sublinear:
                tf = np.log(tf) + 1.0  # as scikit-learn computes it
            weights = tf * part.idf[features]
            weights /= np.sqrt(weights @ weights)
            ids.append(features + part.offset if part.offset else features)
            values.append(weights)
        logits = self._intercept.copy()
        if ids:
            if len(ids) == 1:
                logits += values[0] @ self._weights[ids[0]]
            else:
                logits += np.concatenate(values) @ self._weights[np.concatenate(ids)]
        logits -= logits.max()
        exp = np.exp(logits)
        probs: np.ndarray = exp / exp.sum()
        return probs


@dataclass(frozen=True)
class ClassifierModel:
    """A trained model as stored: the fitted parts, the classes, and the calibrated threshold."""

    vectorizers: list[Any]
    estimator: Any
    classes: list[str]
    threshold: float
    metrics: dict[str, Any]
    data_sha256: str
    sklearn_version: str
    target_precision: float

    def lean(self) -> LeanClassifier:
        return LeanClassifier(self.vectorizers, self.estimator.coef_, self.estimator.intercept_, self.classes)

    def save(self, path: str | Path) -> None:
        joblib.dump(
            {
                "format": ARTIFACT_FORMAT,
                "kind": "tiergate-classifier",
                "vectorizers": self.vectorizers,
                "estimator": self.estimator,
                "classes": self.classes,
                "threshold": self.threshold,
                "metrics": self.metrics,
                "data_sha256": self.data_sha256,
                "sklearn_version": self.sklearn_version,
                "target_precision": self.target_precision,
            },
            path,
            compress=3,
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassifierModel:
        try:
            stored = joblib.load(path)
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model file (train one with `tiergate train`)") from None
        except Exception as exc:
            raise ModelError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
        if not isinstance(stored, dict) or stored.get("kind") != "tiergate-classifier":
            raise ModelError(f"{path}: not a tiergate classifier model")
        if stored.get("format") != ARTIFACT_FORMAT:
            raise ModelError(
                f"{path}: model format {stored.get('format')}, this tiergate reads {ARTIFACT_FORMAT}"
            )
        if stored["sklearn_version"] != sklearn.__version__:
            raise ModelError(
                f"{path}: trained with scikit-learn {stored['sklearn_version']}, "
                f"this is {sklearn.__version__}; retrain the model with this version"
            )
        return cls(
            vectorizers=stored["vectorizers"],
            estimator=stored["estimator"],
            classes=[str(c) for c in stored["classes"]],
            threshold=float(stored["threshold"]),
            metrics=dict(stored["metrics"]),
            data_sha256=stored["data_sha256"],
            sklearn_version=stored["sklearn_version"],
            target_precision=float(stored["target_precision"]),
        )


class Predictor:
    """Labels with confidences from a model, at its calibrated threshold or an override."""

    def __init__(self, model: ClassifierModel, min_confidence: float | None = None) -> None:
        self.lean = model.lean()
        self.threshold = model.threshold if min_confidence is None else min_confidence
        self._oos = model.classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in model.classes else None

    def predict(self, text: str) -> Prediction:
        probs = self.lean.probabilities(text)
        oos_p = 0.0
        if self._oos is not None:
            oos_p = float(probs[self._oos])
            probs[self._oos] = -1.0
        best = int(probs.argmax())
        confidence = float(probs[best])
        label = self.lean.classes[best]
        escalate = confidence < self.threshold or oos_p >= confidence
        return Prediction(None if escalate else label, confidence, escalate, label)


class ClassifierTier:
    name = "classifier"

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    async def decide(self, request: TierRequest) -> Answer | Escalate:
        text = request.chat.last_user_text()
        if len(text) > INLINE_CHARS:
            prediction = await asyncio.to_thread(self._predictor.predict, text)
        else:
            prediction = self._predictor.predict(text)
        if prediction.escalate:
            return Escalate(
                tier=self.name,
                reason=f"confidence {prediction.confidence:.3f} below {self._predictor.threshold:.3f}"
                f" (best guess {prediction.best!r})",
                confidence=prediction.confidence,
            )
        return Answer(tier=self.name, content=prediction.label, confidence=prediction.confidence)
