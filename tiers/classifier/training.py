"""Training the classifier tier's model from rows of text and label (tiers/classifier/rows.py).

A row whose label is empty (CSV) or null (JSONL) is out of scope: the model learns to escalate it.
Rounds of models fitted without some rows (tiers/classifier/folds.py) score every row as a known
intent, out of fold, and every in-scope row as an unseen one, its label held out; on those scores
tiers/classifier/calibration.py fits the confidence model (tiers/classifier/confidence.py) and the
threshold that keeps the promises, and the model is fitted on all rows, alongside. With
`embeddings`, each text's static word-piece embedding (tiers/classifier/embeddings.py), scaled,
is added to its TF-IDF features, and a small network over the embedding
(tiers/classifier/head.py) adds its class scores, weighted as the out-of-fold predictions say.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import sklearn
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from tiers.classifier.calibration import calibrate, promise_summary
from tiers.classifier.confidence import (
    Summary,
)
from tiers.classifier.embeddings import SOURCE, EmbeddingsError, StaticEmbeddings
from tiers.classifier.folds import Split, calibration_folds, near_duplicate_groups
from tiers.classifier.folds import class_rounds as hold_out_classes
from tiers.classifier.head_fitting import (
    HEAD_INPUT_SCALE,
    HEAD_WEIGHTS,
    combined,
    final_head,
    fit_head,
    head_weight,
)
from tiers.classifier.model import (
    OUT_OF_SCOPE,
    WEIGHTS,
    ClassifierModel,
    DenseView,
    summarise,
)
from tiers.classifier.neighbours import Neighbours
from tiers.classifier.rows import DataError, Row, data_sha256
from tiers.classifier.solver import SoftmaxRegression
from tiers.classifier.tfidf import TfidfFeatures, Unseen

Scores = tuple[list[str], np.ndarray]  # classes, and one row of values per text over them
# The embeddings' weight next to the TF-IDF features (each part is a unit vector); how it was
# chosen: benchmarks/README.md.
EMBEDDING_SCALE = 0.75
# Rounds of scoring for the confidence model and the threshold (see `train`; how they were chosen:
# benchmarks/QUALITY.md): folds of rows, rounds holding out a share of the labels, and the share
# of queries of unseen intents the calibration assumes.
DEFAULT_FOLDS = 5
DEFAULT_CLASS_ROUNDS = 8
DEFAULT_UNSEEN_ESCALATION = 0.9
# The linear model's solver (tiers/classifier/solver.py) stops when its gradient is this small
# (scikit-learn's default is 1e-4: twice the iterations for the same decisions; with the solver's
# short memory 5e-4 rather than 1e-3; benchmarks/QUALITY.md).
SOLVER_TOL = 5e-4


def _vectorizers() -> list[TfidfVectorizer]:
    """Word unigrams and bigrams, and character 3- to 5-grams within words (2-grams as well cost a
    quarter more features per row, a fifth more fitting time, and changed nothing on the
    selection splits of benchmarks/QUALITY.md)."""
    return [
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2),
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


def sklearn_vectorizer(part: TfidfFeatures) -> TfidfVectorizer:
    """scikit-learn's own vectorizer with a model's fitted vocabulary and idf weights (the
    reference the lean path is checked against)."""
    vectorizer = TfidfVectorizer(
        analyzer=part.analyzer,
        ngram_range=part.ngram_range,
        lowercase=part.lowercase,
        token_pattern=part.token_pattern,
        sublinear_tf=part.sublinear,
        vocabulary=part.vocabulary,
    )
    vectorizer.fit([""])  # sets up the fixed vocabulary; the idf weights are the model's
    vectorizer.idf_ = part.idf
    return vectorizer


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
    # single precision: the coefficients are kept so anyway (WEIGHTS), and the solver runs faster
    estimator.fit(sparse.hstack(blocks).tocsr().astype(np.float32), labels)
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
    texts: list[str], labels: list[str], c: float, dense: DenseView | None
) -> tuple[list[TfidfVectorizer], Any]:
    return fit_linear(texts, labels, _vectorizers(), SoftmaxRegression(C=c, tol=SOLVER_TOL), dense)


def train(
    rows: Sequence[Row],
    *,
    target_precision: float = 0.975,
    unseen_escalation: float = DEFAULT_UNSEEN_ESCALATION,
    bound: bool = True,
    folds: int = DEFAULT_FOLDS,
    class_rounds: int = DEFAULT_CLASS_ROUNDS,
    c: float = 20.0,
    seed: int = 0,
    embeddings: bool = False,
    jobs: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> ClassifierModel:
    """Fits the model on all rows, with its confidence model and threshold calibrated on rows
    scored by models that did not see them (tiers/classifier/folds.py): `folds` models, each
    fitted without one fold of rows (near duplicates kept together), score every row as the known
    intent it is; `class_rounds` models, each fitted without a share of the labels, score those
    labels' rows as the unseen intents they are to it.

    The threshold is the lowest that keeps two promises: the lower bound of the 95 % interval of
    the precision of what is answered reaches `target_precision` (on the rows scored out of
    fold), and at least `unseen_escalation` of the held-out labels' rows escalate (0: no such
    promise), that share's lower bound too. Without `bound` the point estimates must reach them:
    for example sets too small to promise anything (a hundred right answers of a hundred promise
    only 0.963 at 95 %). `jobs` models are fitted at a time, in worker processes when more than one (the
    same model, up to rounding: their linear algebra may split sums over fewer threads)."""
    _check_arguments(rows, folds, jobs, class_rounds, unseen_escalation)
    began = time.monotonic()

    def step(message: str) -> None:
        progress(f"[{time.monotonic() - began:6.1f}s] {message}")

    dense = _dense_view() if embeddings else None
    texts = [t for t, lab in rows if lab is not None] + [t for t, lab in rows if lab is None]
    labels = [str(lab) for _, lab in rows if lab is not None]
    labels += [OUT_OF_SCOPE] * (len(texts) - len(labels))
    classes = sorted(set(labels))  # the final model's, as scikit-learn orders them
    units = None if dense is None else np.array([dense.embeddings.embed(t) for t in texts])
    splits, rounds = _plan_rounds(texts, labels, folds, class_rounds, seed, jobs, step)
    known, unknown, (vectorizers, estimator) = _score_rounds(
        Fold(texts, labels, c, seed, dense, units), splits, rounds, classes, jobs, step
    )
    weight, probabilities = head_weight(known.linear, known.network, [classes.index(y) for y in labels])
    if known.network is not None:
        step(f"head weight {weight} (lowest out-of-fold log loss of {HEAD_WEIGHTS})")
    excluded = classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in classes else None
    calibration = calibrate(
        known.summaries(probabilities, excluded),
        unknown.summaries(combined(unknown.linear, unknown.network, weight), excluded),
        np.nonzero(unknown.held)[0],
        texts,
        labels,
        classes,
        target_precision,
        unseen_escalation,
        bound,
    )
    step(promise_summary(calibration.threshold, calibration.metrics["promise"]))
    if known.network is not None:
        calibration.metrics["head_weight"] = weight
    if [str(k) for k in estimator.classes_] != classes:  # label_bias is indexed by this order
        raise RuntimeError("the fitted classes are not in the order the confidence model assumed")
    head = final_head(units, labels, classes, seed, weight)
    step("done")
    return model_of(
        vectorizers,
        estimator,
        dense,
        threshold=calibration.threshold,
        metrics={"out_of_fold": calibration.metrics, "folds": len(splits), "class_rounds": len(rounds)},
        data_sha256=data_sha256(rows),
        target_precision=target_precision,
        reliability=calibration.reliability,
        head=head,
        neighbours=neighbours_of(vectorizers, texts, labels, classes, units),
    )


def _plan_rounds(
    texts: list[str],
    labels: list[str],
    folds: int,
    class_rounds: int,
    seed: int,
    jobs: int,
    step: Callable[[str], None],
) -> tuple[list[Split], list[Split]]:
    """The folds (near duplicates kept together) and the rounds holding out labels."""
    groups = near_duplicate_groups(texts, labels)
    splits = calibration_folds(labels, folds, seed, groups)
    rounds = hold_out_classes(labels, class_rounds, seed, keep=(OUT_OF_SCOPE,))
    step(
        f"{len(splits)} folds ({len(texts) - len(set(groups.tolist()))} near-duplicate rows kept with"
        f" their twins) and {len(rounds)} rounds holding out labels, {jobs} at a time"
    )
    return splits, rounds


def neighbours_of(
    vectorizers: list[TfidfVectorizer],
    texts: Sequence[str],
    labels: Sequence[str],
    classes: list[str],
    units: np.ndarray | None,
) -> Neighbours:
    """The training rows by class, as the fitted vectorizers see them (and their embeddings)."""
    matrix = sparse.hstack([v.transform(texts) for v in vectorizers]).tocsr()
    position = {label: k for k, label in enumerate(classes)}
    return Neighbours.of_rows(
        matrix.indptr,
        matrix.indices,
        matrix.data,
        matrix.shape[1],
        np.array([position[y] for y in labels]),
        len(classes),
        units,
    )


def _dense_view() -> DenseView:
    try:
        return DenseView(StaticEmbeddings.load(), EMBEDDING_SCALE)
    except EmbeddingsError as exc:
        raise DataError(str(exc)) from None


def _check_arguments(
    rows: Sequence[Row], folds: int, jobs: int, class_rounds: int, unseen_escalation: float
) -> None:
    if len({lab for _, lab in rows if lab is not None}) < 2:
        raise DataError("training needs at least two labels")
    if folds < 2:
        raise DataError(f"calibration needs at least 2 folds, not {folds}")
    if jobs < 1:
        raise DataError(f"training needs at least 1 job, not {jobs}")
    if class_rounds < 0:
        raise DataError(f"class rounds cannot be negative ({class_rounds})")
    if not 0.0 <= unseen_escalation < 1.0:
        raise DataError(
            f"the share of unseen intents to escalate must be at least 0 and below 1, not {unseen_escalation}"
        )


@dataclass
class Scorings:
    """What the models of one kind of round said of the rows they held out, over all the classes'
    columns (a class a round lacked stays 0): the linear model's probabilities, the head's
    log-probabilities (with embeddings), the unseen-term shares, the similarities to each class's
    nearest training row, and which rows were held (a row no round held stays all zeros)."""

    linear: np.ndarray
    network: np.ndarray | None
    unseen: np.ndarray
    near: np.ndarray
    near_embedding: np.ndarray | None
    held: np.ndarray  # bool per row

    @classmethod
    def empty(cls, rows: int, classes: int, embeddings: bool) -> Scorings:
        return cls(
            np.zeros((rows, classes)),
            np.zeros((rows, classes)) if embeddings else None,
            np.zeros((rows, 2)),
            np.zeros((rows, classes)),
            np.zeros((rows, classes)) if embeddings else None,
            np.zeros(rows, dtype=bool),
        )

    def add(self, scoring: Scoring, position: dict[str, int]) -> None:
        rows = scoring.held
        self.held[rows] = True
        self.unseen[rows] = scoring.unseen
        columns = np.ix_(rows, np.array([position[k] for k in scoring.classes]))
        for block, into in (
            (scoring.linear, self.linear),
            (scoring.network, self.network),
            (scoring.near, self.near),
            (scoring.near_embedding, self.near_embedding),
        ):
            if block is not None and into is not None:
                into[columns] = block

    def summaries(self, probabilities: np.ndarray, excluded: int | None) -> list[Summary]:
        """The held rows' summaries, from their (combined) probabilities."""
        return [
            summarise(
                probabilities[i],
                excluded,
                Unseen(*self.unseen[i]),
                self.near[i],
                None if self.near_embedding is None else self.near_embedding[i],
            )
            for i in np.nonzero(self.held)[0]
        ]


def _score_rounds(
    fold: Fold,
    splits: list[tuple[np.ndarray, np.ndarray]],
    rounds: list[tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    jobs: int,
    step: Callable[[str], None],
) -> tuple[Scorings, Scorings, tuple[list[TfidfVectorizer], Any]]:
    """Every row scored by a model that did not see it (the folds: `known`), every in-scope row
    by a model that never saw its label (the class rounds: `unknown`), and the linear model
    fitted on all rows."""
    position = {label: k for k, label in enumerate(classes)}
    rows = len(fold.texts)
    embeddings = fold.units is not None
    known = Scorings.empty(rows, len(classes), embeddings)
    unknown = Scorings.empty(rows, len(classes), embeddings)
    work = [(known, fit, held) for fit, held in splits] + [(unknown, fit, held) for fit, held in rounds]
    # the model on all rows is fitted alongside (last, as the longest job)
    results = joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(
        [joblib.delayed(fold.fit_all)()]
        + [
            joblib.delayed(fold.score)(number, fit_rows, held_rows)
            for number, (_, fit_rows, held_rows) in enumerate(work)
        ]
    )
    final: tuple[list[TfidfVectorizer], Any] | None = None
    done = 0
    for result in results:
        if not isinstance(result, Scoring):
            final = result
            continue
        done += 1
        into = work[result.number][0]
        kind = "fold" if into is known else "class round"
        step(f"{kind} scored ({len(result.held)} rows; {done}/{len(work)})")
        into.add(result, position)
    assert final is not None
    return known, unknown, final


@dataclass(frozen=True)
class Fold:
    """What scoring one fold needs, picklable for a worker process."""

    texts: list[str]
    labels: list[str]
    c: float
    seed: int
    dense: DenseView | None
    units: np.ndarray | None  # the texts' unit embeddings, with `dense`

    def fit_all(self) -> tuple[list[TfidfVectorizer], Any]:
        """The linear model on all rows."""
        return _fit(self.texts, self.labels, self.c, self.dense)

    def score(self, number: int, fit_rows: np.ndarray, held_rows: np.ndarray) -> Scoring:
        """What models fitted on the fit rows say of the held rows: the linear model's
        probabilities, the head's log-probabilities (each with the classes of its columns: a
        round may lack a label), the shares of terms out of their vocabulary, and the similarity
        to each class's nearest fitted row."""
        texts, labels = self.texts, self.labels
        fit_texts = [texts[i] for i in fit_rows]
        fit_labels = [labels[i] for i in fit_rows]
        vectorizers, estimator = _fit(fit_texts, fit_labels, self.c, self.dense)
        fitted_classes = [str(k) for k in estimator.classes_]
        neighbours = neighbours_of(
            vectorizers,
            fit_texts,
            fit_labels,
            fitted_classes,
            None if self.units is None else self.units[fit_rows],
        )
        lean = model_of(vectorizers, estimator, self.dense).lean(
            None if self.dense is None else self.dense.embeddings
        )
        held_texts = [texts[i] for i in held_rows]
        scored = [lean.scores(text) for text in held_texts]
        network = None
        if self.units is not None:
            fitted = fit_head(self.units[fit_rows], fit_labels, self.seed)
            network = fitted.predict_log_proba((HEAD_INPUT_SCALE * self.units[held_rows]).astype(np.float32))
        return Scoring(
            number,
            held_rows,
            fitted_classes,
            np.array([p for p, _ in scored]),
            network,
            np.array([u for _, u in scored]),
            neighbours.nearest(sparse.hstack([v.transform(held_texts) for v in vectorizers]).tocsr()),
            None if self.units is None else neighbours.nearest_embedding(self.units[held_rows]),
        )


@dataclass(frozen=True)
class Scoring:
    """One round's scores of its held rows, columns in `classes` order (the round's labels)."""

    number: int
    held: np.ndarray
    classes: list[str]
    linear: np.ndarray
    network: np.ndarray | None
    unseen: np.ndarray
    near: np.ndarray
    near_embedding: np.ndarray | None
