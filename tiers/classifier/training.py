"""Training the classifier tier's model from rows of text and label (tiers/classifier/rows.py).

A row whose label is empty (CSV) or null (JSONL) is out of scope: the model learns to escalate it.
Out-of-fold predictions (every row, the out-of-scope ones included, scored by a model fitted
without it) fit the confidence model (tiers/classifier/confidence.py) and calibrate the confidence threshold
to reach a target precision, then the model is fitted on all rows. With `embeddings`, each text's static
word-piece embedding (tiers/classifier/embeddings.py), scaled, is added to its TF-IDF features, and a small
network over the embedding (tiers/classifier/head.py) adds its class scores, weighted as the out-of-fold
predictions say.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import sklearn
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier

from tiers.classifier.confidence import (
    SIGNALS,
    Reliability,
    Summary,
    confidence,
    confidence_kind,
    signals,
    word_count,
)
from tiers.classifier.drift import BELOW, OUT_OF_SCOPE_OUTCOME
from tiers.classifier.drift import baseline as drift_baseline
from tiers.classifier.embeddings import SOURCE, EmbeddingsError, StaticEmbeddings
from tiers.classifier.evaluation import calibrate_threshold, report
from tiers.classifier.head import DenseHead
from tiers.classifier.model import (
    OUT_OF_SCOPE,
    WEIGHTS,
    ClassifierModel,
    DenseView,
    Prediction,
    summarise,
)
from tiers.classifier.rows import DataError, Row, data_sha256
from tiers.classifier.tfidf import TfidfFeatures

Scores = tuple[list[str], np.ndarray]  # classes, and one row of values per text over them
# The embeddings' weight next to the TF-IDF features (each part is a unit vector); how it was
# chosen: benchmarks/README.md.
EMBEDDING_SCALE = 0.75
# Out-of-fold scorings for the confidence model and the threshold (see `train`).
DEFAULT_FOLDS = 20
# The head over the embeddings (tiers/classifier/head.py): HEAD_UNITS hidden units, L2 strength
# HEAD_ALPHA, HEAD_EPOCHS passes of Adam, fed HEAD_INPUT_SCALE times the unit embedding (whose
# entries are about 0.06; the optimiser's defaults suit inputs near 1). Its scores count
# HEAD_WEIGHTS[i] times, whichever gives the lowest out-of-fold log loss (0: no head).
HEAD_UNITS = 256
HEAD_ALPHA = 0.01
HEAD_EPOCHS = 50
HEAD_INPUT_SCALE = 10.0
HEAD_WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5)


def _vectorizers() -> list[TfidfVectorizer]:
    return [
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    ]


def features_of(vectorizer: TfidfVectorizer) -> TfidfFeatures:
    """A fitted vectorizer's parts, for serving without scikit-learn."""
    custom = [
        name
        for name in ("strip_accents", "preprocessor", "tokenizer", "stop_words")
        if getattr(vectorizer, name) is not None
    ]
    if custom or vectorizer.norm != "l2" or not vectorizer.use_idf or vectorizer.binary:
        raise ValueError(
            f"the lean path does not reproduce this vectorizer ({custom or 'norm, idf or binary'})"
        )
    return TfidfFeatures(
        analyzer=vectorizer.analyzer,
        ngram_range=tuple(vectorizer.ngram_range),
        lowercase=vectorizer.lowercase,
        token_pattern=vectorizer.token_pattern,
        sublinear=vectorizer.sublinear_tf,
        vocabulary={str(term): int(index) for term, index in vectorizer.vocabulary_.items()},
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
    )


def fit_linear(
    texts: Sequence[str],
    labels: Sequence[str],
    vectorizers: list[TfidfVectorizer],
    estimator: Any,
    dense: DenseView | None = None,
) -> tuple[list[TfidfVectorizer], Any]:
    """Fits the vectorizers and the estimator on their stacked features (then the dense view's)."""
    blocks = [v.fit_transform(texts) for v in vectorizers]
    if dense is not None:
        blocks.append(sparse.csr_matrix(np.array([dense.features(t) for t in texts])))
    estimator.fit(sparse.hstack(blocks).tocsr(), labels)
    return vectorizers, estimator


def embeddings_field(dense: DenseView | None) -> dict[str, Any] | None:
    """What a model file says of its embeddings."""
    if dense is None:
        return None
    return {
        "source": SOURCE,
        "scale": dense.scale,
        "sha256": dense.embeddings.sha256,
        "dims": dense.embeddings.dims,
    }


def model_of(
    vectorizers: list[TfidfVectorizer], estimator: Any, dense: DenseView | None = None, **fields: Any
) -> ClassifierModel:
    """A model file's contents from fitted scikit-learn parts (threshold and metrics in `fields`)."""
    defaults: dict[str, Any] = {
        "threshold": 0.5,
        "metrics": {},
        "data_sha256": "",
        "sklearn_version": sklearn.__version__,
        "target_precision": 0.0,
    }
    return ClassifierModel(
        features=tuple(features_of(v) for v in vectorizers),
        coef=np.asarray(estimator.coef_, dtype=WEIGHTS),
        intercept=np.asarray(estimator.intercept_, dtype=np.float64),
        classes=[str(c) for c in estimator.classes_],
        embeddings=embeddings_field(dense),
        **(defaults | fields),
    )


def _fit(
    texts: list[str], labels: list[str], c: float, seed: int, dense: DenseView | None
) -> tuple[list[TfidfVectorizer], Any]:
    return fit_linear(
        texts, labels, _vectorizers(), LogisticRegression(C=c, max_iter=3000, random_state=seed), dense
    )


def calibration_folds(labels: Sequence[str], folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held rows) index pairs: each row held out once; stratified by label when every
    label has a row in each fold."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    folds = min(folds, len(labels))
    if min(counts.values()) >= folds:
        splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def train(
    rows: Sequence[Row],
    *,
    target_precision: float = 0.975,
    folds: int = DEFAULT_FOLDS,
    c: float = 20.0,
    seed: int = 0,
    embeddings: bool = False,
    jobs: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> ClassifierModel:
    """Fits the model on all rows, with its threshold calibrated on out-of-fold predictions: `folds`
    models, each fitted without one fold, score the rows of that fold. Every row is scored once by
    a model that did not see it, so the threshold rests on all rows rather than one held-out
    share; more folds fit models closer to the final one. `jobs` folds are fitted at a time, in
    worker processes when more than one (the same model, up to rounding: their linear algebra may
    split sums over fewer threads)."""
    _check_arguments(rows, folds, jobs)
    began = time.monotonic()

    def step(message: str) -> None:
        progress(f"[{time.monotonic() - began:6.1f}s] {message}")

    dense = _dense_view() if embeddings else None
    texts = [t for t, lab in rows if lab is not None] + [t for t, lab in rows if lab is None]
    labels = [str(lab) for _, lab in rows if lab is not None]
    labels += [OUT_OF_SCOPE] * (len(texts) - len(labels))
    classes = sorted(set(labels))  # the final model's, as scikit-learn orders them
    units = None if dense is None else np.array([dense.embeddings.embed(t) for t in texts])
    splits = calibration_folds(labels, folds, seed)
    step(f"{len(splits)} folds, {jobs} at a time")
    linear, network = _score_out_of_fold(
        Fold(texts, labels, c, seed, dense, units), splits, classes, jobs, step
    )
    weight, probabilities = head_weight(linear, network, [classes.index(y) for y in labels])
    if network is not None:
        step(f"head weight {weight} (lowest out-of-fold log loss of {HEAD_WEIGHTS})")
    calibration = _calibrate(probabilities, texts, labels, classes, target_precision)
    step(f"threshold {calibration.threshold:.4f} reaches precision {target_precision} out of fold")
    if network is not None:
        calibration.metrics["head_weight"] = weight
    step(f"fitting on all {len(texts)} rows")
    vectorizers, estimator = _fit(texts, labels, c, seed, dense)
    if [str(k) for k in estimator.classes_] != classes:  # label_bias is indexed by this order
        raise RuntimeError("the fitted classes are not in the order the confidence model assumed")
    head = _final_head(units, labels, classes, seed, weight)
    step("done")
    return model_of(
        vectorizers,
        estimator,
        dense,
        threshold=calibration.threshold,
        metrics={"out_of_fold": calibration.metrics, "folds": len(splits)},
        data_sha256=data_sha256(rows),
        target_precision=target_precision,
        reliability=calibration.reliability,
        head=head,
    )


def _dense_view() -> DenseView:
    try:
        return DenseView(StaticEmbeddings.load(), EMBEDDING_SCALE)
    except EmbeddingsError as exc:
        raise DataError(str(exc)) from None


def _check_arguments(rows: Sequence[Row], folds: int, jobs: int) -> None:
    if len({lab for _, lab in rows if lab is not None}) < 2:
        raise DataError("training needs at least two labels")
    if folds < 2:
        raise DataError(f"calibration needs at least 2 folds, not {folds}")
    if jobs < 1:
        raise DataError(f"training needs at least 1 job, not {jobs}")


def _score_out_of_fold(
    fold: Fold,
    splits: list[tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    jobs: int,
    step: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every row's probabilities from the model that did not see it: the linear model's, and the
    head's log-probabilities when there are embeddings. They cover all the classes (a fold may lack
    a rare label: its columns stay 0)."""
    position = {label: k for k, label in enumerate(classes)}
    rows = len(fold.texts)
    linear = np.zeros((rows, len(classes)))
    network = None if fold.units is None else np.zeros((rows, len(classes)))
    scorings = joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(
        joblib.delayed(fold.score)(fit_rows, held_rows) for fit_rows, held_rows in splits
    )
    for number, (held_rows, fold_linear, fold_network) in enumerate(scorings, 1):
        step(f"fold {number}/{len(splits)} scored ({len(held_rows)} rows)")
        for block, into in ((fold_linear, linear), (fold_network, network)):
            if block is not None and into is not None:
                fitted_classes, values = block
                into[np.ix_(held_rows, np.array([position[k] for k in fitted_classes]))] = values
    return linear, network


@dataclass(frozen=True)
class Calibration:
    reliability: Reliability | None
    threshold: float
    metrics: dict[str, Any]


def _calibrate(
    probabilities: np.ndarray, texts: list[str], labels: list[str], classes: list[str], target: float
) -> Calibration:
    """The confidence model and the threshold, fitted on the out-of-fold predictions. Rows the
    out-of-scope class claims are never answered whatever the threshold: both are fitted on the
    rest."""
    excluded = classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in classes else None
    out_of_fold = [summarise(p, excluded) for p in probabilities]
    answerable = [i for i, s in enumerate(out_of_fold) if s.ahead]
    correct = [classes[s.best] == y for s, y in zip(out_of_fold, labels, strict=True)]
    reliability = fit_reliability(
        [out_of_fold[i] for i in answerable],
        [word_count(texts[i]) for i in answerable],
        [correct[i] for i in answerable],
        len(classes),
    )
    confidences = [confidence(reliability, s, t) for s, t in zip(out_of_fold, texts, strict=True)]
    threshold = calibrate_threshold(
        [confidences[i] for i in answerable], [correct[i] for i in answerable], target
    )
    metrics = report(
        [
            Prediction.at(classes[s.best], score, threshold, s.ahead)
            for s, score in zip(out_of_fold, confidences, strict=True)
        ],
        [None if y == OUT_OF_SCOPE else y for y in labels],
        threshold,
    )
    metrics["confidence"] = confidence_kind(reliability)
    outcomes = [
        OUT_OF_SCOPE_OUTCOME if not s.ahead else classes[s.best] if score >= threshold else BELOW
        for s, score in zip(out_of_fold, confidences, strict=True)
    ]
    metrics["baseline"] = drift_baseline(texts, confidences, outcomes)
    return Calibration(reliability, threshold, metrics)


def _final_head(
    units: np.ndarray | None, labels: list[str], classes: list[str], seed: int, weight: float
) -> DenseHead | None:
    """The head fitted on all rows, when the out-of-fold weighting kept it."""
    if weight <= 0 or units is None:
        return None
    fitted = _fit_head(units, labels, seed)
    if [str(k) for k in fitted.classes_] != classes:
        raise RuntimeError("the head's classes are not in the linear model's order")
    return DenseHead.folded(fitted.coefs_, fitted.intercepts_, HEAD_INPUT_SCALE, weight)


@dataclass(frozen=True)
class Fold:
    """What scoring one fold needs, picklable for a worker process."""

    texts: list[str]
    labels: list[str]
    c: float
    seed: int
    dense: DenseView | None
    units: np.ndarray | None  # the texts' unit embeddings, with `dense`

    def score(self, fit_rows: np.ndarray, held_rows: np.ndarray) -> tuple[np.ndarray, Scores, Scores | None]:
        """The held rows, the linear model's probabilities for them and the head's log-probabilities
        (each with the classes of its columns: a fold may lack a rare label), from models fitted
        on the fit rows."""
        texts, labels = self.texts, self.labels
        fit_labels = [labels[i] for i in fit_rows]
        vectorizers, estimator = _fit([texts[i] for i in fit_rows], fit_labels, self.c, self.seed, self.dense)
        lean = model_of(vectorizers, estimator, self.dense).lean(
            None if self.dense is None else self.dense.embeddings
        )
        linear = (lean.classes, np.array([lean.probabilities(texts[i]) for i in held_rows]))
        if self.units is None:
            return held_rows, linear, None
        fitted = _fit_head(self.units[fit_rows], fit_labels, self.seed)
        scores = fitted.predict_log_proba((HEAD_INPUT_SCALE * self.units[held_rows]).astype(np.float32))
        return held_rows, linear, ([str(k) for k in fitted.classes_], scores)


def _fit_head(units: np.ndarray, labels: Sequence[str], seed: int) -> MLPClassifier:
    """The head's network, fitted for HEAD_EPOCHS passes (a budget, not a convergence test)."""
    network = MLPClassifier((HEAD_UNITS,), alpha=HEAD_ALPHA, max_iter=HEAD_EPOCHS, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return network.fit((HEAD_INPUT_SCALE * units).astype(np.float32), list(labels))


def head_weight(
    linear: np.ndarray, network: np.ndarray | None, truth: Sequence[int]
) -> tuple[float, np.ndarray]:
    """The weight of HEAD_WEIGHTS whose combined probabilities (the linear model's times the
    head's to that power, renormalised) have the lowest log loss on the true classes, and those
    probabilities. Without a head: 0 and the linear model's."""
    if network is None:
        return 0.0, linear
    rows = np.arange(len(truth))
    with np.errstate(divide="ignore"):
        base = np.log(linear)
    best: tuple[float, float, np.ndarray] | None = None
    for weight in HEAD_WEIGHTS:
        logits = base + weight * network
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        loss = float(-np.log(np.maximum(probabilities[rows, truth], 1e-300)).mean())
        if best is None or loss < best[0]:
            best = (loss, weight, probabilities)
    assert best is not None
    return best[1], best[2]


def fit_reliability(
    summaries: Sequence[Summary], words: Sequence[int], correct: Sequence[bool], classes: int
) -> Reliability | None:
    """The confidence model (tiers/classifier/confidence.py) fitted on out-of-fold predictions, or
    None when they are all right or all wrong (nothing to tell apart; the margin is the confidence
    then). L2 strength C = 1."""
    if len(set(correct)) < 2:
        return None
    onehot = np.zeros((len(summaries), classes))
    onehot[np.arange(len(summaries)), [s.best for s in summaries]] = 1.0
    x = np.hstack([np.array([signals(s, n) for s, n in zip(summaries, words, strict=True)]), onehot])
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit(x, np.asarray(correct, dtype=int))
    coef = fitted.coef_[0]
    return Reliability(
        weights=tuple(float(w) for w in coef[: len(SIGNALS)]),
        label_bias=tuple(float(b) for b in coef[len(SIGNALS) :]),
        intercept=float(fitted.intercept_[0]),
    )
