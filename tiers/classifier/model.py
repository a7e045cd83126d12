"""The classifier tier: a linear model over word and character TF-IDF features (fitted with
scikit-learn) answering with a label when it is confident enough, escalating otherwise.

A fitted scikit-learn pipeline takes milliseconds for one text; serving goes through a lean path
that computes the same probabilities from the fitted parts (vocabularies, idf weights,
coefficients): a dictionary walk for the text's feature ids, then a compiled kernel
(tiers/classifier/_lean.c) for the weighting, the coefficients and the softmax (NumPy does the
same when the kernel is not built, more slowly). A model may add a dense view of the text, static
word-piece embeddings (tiers/classifier/embeddings.py, `tiergate train --embeddings`), whose
coefficients follow the TF-IDF features', and a small network over them whose class scores join
the linear model's (tiers/classifier/head.py). Model files hold only those parts, as plain values
and NumPy arrays, so a gateway that serves a model never imports scikit-learn. They are written
with joblib (a pickle): load only files you made or trust.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np

try:
    from tiers.classifier import _lean
except ImportError:  # not built: the NumPy path computes the same
    _lean = None  # type: ignore[assignment]

from tiers.classifier.confidence import Reliability, Summary, confidence, word_count
from tiers.classifier.embeddings import EmbeddingsError, StaticEmbeddings, installed_sha256
from tiers.classifier.head import DenseHead
from tiers.classifier.neighbours import Neighbours
from tiers.classifier.tfidf import StackedTfidf, TfidfFeatures, Unseen

log = logging.getLogger("tiergate.classifier")

# 3 added the optional embeddings, 4 the confidence model, 5 the head over the embeddings, 6 the
# training rows (tiers/classifier/neighbours.py) and the confidence model's signals of unseen
# intents; format 2 and 3 files still load (their confidence is the margin), 4 and 5 with the
# confidence model they were calibrated with
ARTIFACT_FORMAT = 6
READABLE_FORMATS = (2, 3, 4, 5, 6)
OUT_OF_SCOPE = "__out_of_scope__"
NOTHING_UNSEEN = Unseen(0.0, 0.0)
# Coefficients are kept in single precision: half the memory of a worker's largest part,
# probabilities within 1e-6 of double precision's (tested), and the same decisions. Features and
# logits stay in double precision.
WEIGHTS = np.float32


class ModelError(Exception):
    """A model file that cannot be used: missing, not a tiergate model, or from another version."""


def sklearn_version() -> str:
    """The installed scikit-learn's version, read without importing it."""
    try:
        return metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True, slots=True)
class DenseView:
    """The embeddings a model adds to its TF-IDF features, their weight next to them, and the
    head over them if the model has one."""

    embeddings: StaticEmbeddings
    scale: float
    head: DenseHead | None = None

    def features(self, text: str) -> np.ndarray:
        """The view's features of one text, as training sees them."""
        return self.scale * self.embeddings.embed(text)


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str | None  # None: out of scope, or not confident enough
    confidence: float
    escalate: bool
    best: str  # the most likely in-scope label, even when escalating
    ahead: bool  # `best` leads every other class, the out-of-scope one included
    why: str | None = None  # escalated below the threshold: what pulled the confidence down most

    @classmethod
    def at(cls, best: str, confidence: float, threshold: float, ahead: bool) -> Prediction:
        """Answered with `best`, or escalated when the confidence is below the threshold or `best`
        does not lead every other class (the out-of-scope class came first, or a tie)."""
        escalate = not ahead or confidence < threshold
        return cls(None if escalate else best, confidence, escalate, best, ahead)


def summarise(
    probabilities: np.ndarray,
    excluded: int | None,
    unseen: Unseen = NOTHING_UNSEEN,
    near: np.ndarray | None = None,
    near_embedding: np.ndarray | None = None,
) -> Summary:
    """What `LeanClassifier.decide` reports of a text's class probabilities (the kernel computes
    the same), its share of unseen terms, and its similarity to each class's nearest training
    row (`near`, `near_embedding`: per class; the best class's is kept)."""
    probs = np.array(probabilities, dtype=np.float64)
    positive = probs[probs > 0]
    entropy = float(-(positive * np.log(positive)).sum())
    if excluded is not None:
        probs[excluded] = -1.0
    best = int(probs.argmax())
    if excluded is not None:
        probs[excluded] = probabilities[excluded]
    top = float(probs[best])
    probs[best] = -1.0
    return Summary(
        best,
        top,
        max(0.0, float(probs.max())),
        entropy,
        *unseen,
        0.0 if near is None else float(near[best]),
        0.0 if near_embedding is None else float(near_embedding[best]),
    )


def _head_arrays(head: DenseHead) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (head.hidden_weights, head.hidden_bias, head.out_weights, head.out_bias)


class LeanClassifier:
    """The fitted model's probabilities without scikit-learn's per-call overhead: through the
    compiled kernel when it is built (`compiled`), with NumPy otherwise."""

    def __init__(
        self,
        features: tuple[TfidfFeatures, ...],
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: list[str],
        dense: DenseView | None = None,
        neighbours: Neighbours | None = None,
    ):
        self._features = StackedTfidf(features)
        self._dense = dense
        self._neighbours = neighbours
        size = self._features.size + (dense.embeddings.dims if dense else 0)
        if coef.shape[1] != size:
            raise ValueError(f"{coef.shape[1]} coefficients per class for {size} features")
        if coef.shape[0] == 1:  # binary: sklearn's sigmoid equals a softmax over (0, logit)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        self._weights = np.ascontiguousarray(coef.T, dtype=WEIGHTS)  # features x classes
        self._intercept = np.ascontiguousarray(intercept, dtype=np.float64)
        self.classes = classes
        self._kernel = (
            None
            if _lean is None
            else _lean.Kernel(
                self._weights,
                self._intercept,
                self._features.idf,
                self._features.sublinear,
                None if dense is None else dense.embeddings.weights.view(np.uint16),
                0.0 if dense is None else dense.scale,
                None if dense is None or dense.head is None else _head_arrays(dense.head),
            )
        )
        if self._kernel is None:
            log.warning("the compiled kernel is not built: the classifier runs in NumPy, about 3x slower")

    @property
    def compiled(self) -> bool:
        return self._kernel is not None

    def _kernel_input(self, text: str, ids: tuple[list[int], ...] | None = None) -> tuple[list[int], ...]:
        if ids is None:
            ids = self._features.term_ids(text)
        if self._dense is None:
            return ids
        return (*ids, self._dense.embeddings.pieces.text_ids(text))

    def probabilities(self, text: str) -> np.ndarray:
        if self._kernel is not None:
            probs = np.empty(len(self._intercept))
            self._kernel.probabilities(self._kernel_input(text), probs)
            return probs
        return self.numpy_probabilities(text)

    def scores(self, text: str) -> tuple[np.ndarray, Unseen]:
        """The class probabilities and the share of the text's terms out of the vocabulary
        (tiers/classifier/tfidf.py), from one pass over the text's terms."""
        ids, unseen = self._features.counted_ids(text)
        if self._kernel is None:
            return self.numpy_probabilities(text), unseen
        probs = np.empty(len(self._intercept))
        self._kernel.probabilities(self._kernel_input(text, ids), probs)
        return probs, unseen

    def decide(self, text: str, excluded: int | None) -> Summary:
        """The most likely class other than `excluded` (ties: the first), its probability, the
        largest other one (`excluded` included; 0.0 with one class), the entropy of all, the
        share of the text's terms out of the vocabulary and its similarity to the best class's
        nearest training row."""
        ids, unseen = self._features.counted_ids(text)
        parts = self._kernel_input(text, ids)
        if self._kernel is not None:
            best, top, runner_up, entropy = self._kernel.decide(parts, -1 if excluded is None else excluded)
        else:
            found = summarise(self.numpy_probabilities(text), excluded)
            best, top, runner_up, entropy = found.best, found.top, found.runner_up, found.entropy
        near = near_embedding = 0.0
        neighbours = self._neighbours
        if neighbours is not None:
            first, last = int(neighbours.starts[best]), int(neighbours.starts[best + 1])
            if self._kernel is not None:
                near = self._kernel.nearest(
                    ids, neighbours.values, neighbours.indices, neighbours.indptr, first, last
                )
            else:
                weighted = self._features.weigh(ids)
                if weighted is not None:
                    near = neighbours.similarity(best, *weighted)
            if self._dense is not None and neighbours.units is not None:
                if self._kernel is not None:
                    near_embedding = self._kernel.nearest_embedding(parts[-1], neighbours.units, first, last)
                else:
                    near_embedding = neighbours.embedding_similarity(best, self._dense.embeddings.embed(text))
        return Summary(best, top, runner_up, entropy, *unseen, near, near_embedding)

    def numpy_probabilities(self, text: str) -> np.ndarray:
        """The same probabilities with NumPy: the reference the kernel is tested against."""
        found = self._features.transform(text)
        if found is None:
            logits = self._intercept.copy()
        else:
            logits = found[1] @ self._weights[found[0]] + self._intercept
        if self._dense is not None:
            unit = self._dense.embeddings.embed(text)
            logits = logits + (self._dense.scale * unit) @ self._weights[self._features.size :]
            if self._dense.head is not None:
                logits = logits + self._dense.head.scores(unit)
        logits -= logits.max()
        exp = np.exp(logits)
        probs: np.ndarray = exp / exp.sum()
        return probs


@dataclass(frozen=True)
class ModelFile:
    """A model file's fields as stored (plain values and arrays), read and checked once."""

    format: int
    kind: str
    features: list[dict[str, Any]]
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]
    threshold: float
    metrics: dict[str, Any]
    data_sha256: str
    sklearn_version: str
    target_precision: float
    embeddings: dict[str, Any] | None = None  # format 3 on
    reliability: dict[str, Any] | None = None  # format 4 on
    head: dict[str, Any] | None = None  # format 5
    neighbours: dict[str, Any] | None = None  # format 6

    @classmethod
    def read(cls, path: str | Path) -> ModelFile:
        """The file's fields; a ModelError says why a file cannot be used."""
        try:
            raw = joblib.load(path)
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model file (train one with `tiergate train`)") from None
        except Exception as exc:
            raise ModelError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
        if not isinstance(raw, dict) or raw.get("kind") != "tiergate-classifier":
            raise ModelError(f"{path}: not a tiergate classifier model")
        if raw.get("format") not in READABLE_FORMATS:
            raise ModelError(
                f"{path}: model format {raw.get('format')}, this tiergate reads formats"
                f" {', '.join(map(str, READABLE_FORMATS))};"
                " retrain the model with this version"
            )
        try:
            stored = cls(**raw)
        except TypeError as exc:
            raise ModelError(f"{path}: a damaged model file ({exc})") from None
        installed = sklearn_version()
        if stored.sklearn_version != installed:
            raise ModelError(
                f"{path}: trained with scikit-learn {stored.sklearn_version}, "
                f"this is {installed}; retrain the model with this version"
            )
        if stored.head is not None and stored.embeddings is None:
            raise ModelError(f"{path}: a damaged model file (a head over embeddings, but no embeddings)")
        return stored


@dataclass(frozen=True)
class ClassifierModel:
    """A trained model as stored: the fitted parts, the classes, and the calibrated threshold."""

    features: tuple[TfidfFeatures, ...]
    coef: np.ndarray  # classes (or 1 for two classes) x features, as scikit-learn fits it (WEIGHTS)
    intercept: np.ndarray
    classes: list[str]
    threshold: float
    metrics: dict[str, Any]
    data_sha256: str
    sklearn_version: str
    target_precision: float
    # {"source", "scale", "sha256", "dims"} of the embeddings added to the TF-IDF features, or None
    embeddings: dict[str, Any] | None = None
    # the confidence model (tiers/classifier/confidence.py); None: the confidence is the margin (format 2, 3)
    reliability: Reliability | None = None
    # the network over the embeddings (tiers/classifier/head.py); None: the linear model alone
    head: DenseHead | None = None
    # the training rows by class (tiers/classifier/neighbours.py); None before format 6
    neighbours: Neighbours | None = None

    def dense_view(self, loaded: StaticEmbeddings | None = None) -> DenseView | None:
        """The model's embeddings (`loaded` if given), checked against the ones it was trained on."""
        if self.embeddings is None:
            return None
        try:
            embeddings = loaded or StaticEmbeddings.load(str(self.embeddings["source"]))
        except EmbeddingsError as exc:
            raise ModelError(f"the model uses embeddings that cannot be loaded: {exc}") from None
        self._check_embeddings(embeddings.sha256)
        return DenseView(embeddings, float(self.embeddings["scale"]), self.head)

    def check_embeddings(self) -> None:
        """Refuses a model whose embeddings are missing or differ from the installed ones, without
        loading them."""
        if self.embeddings is None:
            return
        try:
            installed = installed_sha256(str(self.embeddings["source"]))
        except EmbeddingsError as exc:
            raise ModelError(f"the model uses embeddings that cannot be loaded: {exc}") from None
        self._check_embeddings(installed)

    def _check_embeddings(self, installed: str) -> None:
        assert self.embeddings is not None
        if installed != self.embeddings["sha256"]:
            raise ModelError(
                f"the model was trained on other {self.embeddings['source']} embeddings than the installed"
                " ones (their files differ); retrain the model or install the wordllama version it used"
            )

    def lean(self, embeddings: StaticEmbeddings | None = None) -> LeanClassifier:
        return LeanClassifier(
            self.features,
            self.coef,
            self.intercept,
            self.classes,
            self.dense_view(embeddings),
            self.neighbours,
        )

    def save(self, path: str | Path) -> None:
        joblib.dump(
            {
                "format": ARTIFACT_FORMAT,
                "kind": "tiergate-classifier",
                "features": [f.to_plain() for f in self.features],
                "coef": np.asarray(self.coef, dtype=WEIGHTS),
                "intercept": np.asarray(self.intercept, dtype=np.float64),
                "classes": list(self.classes),
                "threshold": self.threshold,
                "metrics": self.metrics,
                "data_sha256": self.data_sha256,
                "sklearn_version": self.sklearn_version,
                "target_precision": self.target_precision,
                "embeddings": self.embeddings,
                "reliability": None if self.reliability is None else self.reliability.to_plain(),
                "head": None if self.head is None else self.head.to_plain(),
                "neighbours": None if self.neighbours is None else self.neighbours.to_plain(),
            },
            path,
            compress=3,
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassifierModel:
        stored = ModelFile.read(path)
        try:
            model = cls(
                features=tuple(TfidfFeatures.from_plain(plain) for plain in stored.features),
                coef=np.asarray(stored.coef, dtype=WEIGHTS),
                intercept=np.asarray(stored.intercept, dtype=np.float64),
                classes=[str(c) for c in stored.classes],
                threshold=float(stored.threshold),
                metrics=dict(stored.metrics),
                data_sha256=str(stored.data_sha256),
                sklearn_version=str(stored.sklearn_version),
                target_precision=float(stored.target_precision),
                embeddings=None if stored.embeddings is None else dict(stored.embeddings),
                reliability=None
                if stored.reliability is None
                else Reliability.from_plain(stored.reliability, len(stored.classes)),
                head=None
                if stored.head is None or stored.embeddings is None
                else DenseHead.from_plain(stored.head, int(stored.embeddings["dims"]), len(stored.classes)),
                neighbours=None
                if stored.neighbours is None
                else Neighbours.from_plain(
                    stored.neighbours,
                    len(stored.classes),
                    sum(len(plain["idf"]) for plain in stored.features),
                    None if stored.embeddings is None else int(stored.embeddings["dims"]),
                ),
            )
            model.check_shapes()
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: a damaged model file ({type(exc).__name__}: {exc})") from None
        try:
            model.check_embeddings()  # missing or changed: said now, not at the first request
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
        return model

    def check_shapes(self) -> None:
        features = sum(f.size for f in self.features)
        if self.embeddings is not None:
            features += int(self.embeddings["dims"])
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        if self.coef.shape != (rows, features) or self.intercept.shape != (rows,):
            raise ValueError(
                f"coefficients {self.coef.shape} and intercepts {self.intercept.shape} do not fit"
                f" {len(self.classes)} classes and {features} features"
            )


class Predictor:
    """Labels with confidences from a model, at its calibrated threshold or an override.

    The confidence is the model's reliability estimate (tiers/classifier/confidence.py): the
    probability that the best in-scope label is right. Models without one (formats 2 and 3) use
    the margin, the best label's probability minus the runner-up's. When the out-of-scope class
    comes first the text always escalates.
    """

    def __init__(
        self,
        model: ClassifierModel,
        min_confidence: float | None = None,
        embeddings: StaticEmbeddings | None = None,
    ) -> None:
        self.lean = model.lean(embeddings)
        self.threshold = model.threshold if min_confidence is None else min_confidence
        self._oos = model.classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in model.classes else None
        self._reliability = model.reliability

    def summary(self, text: str) -> Summary:
        return self.lean.decide(text, self._oos)

    def predict(self, text: str) -> Prediction:
        summary = self.summary(text)
        prediction = Prediction.at(
            self.lean.classes[summary.best],
            confidence(self._reliability, summary, text),
            self.threshold,
            summary.ahead,
        )
        if prediction.escalate and prediction.ahead and self._reliability is not None:
            why = self._reliability.reason(summary, word_count(text))
            if why is not None:
                return dataclasses.replace(prediction, why=why)
        return prediction
