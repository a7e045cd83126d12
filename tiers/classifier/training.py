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
from scipy import sparse, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
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
from tiers.classifier.evaluation import CONFIDENCE_LEVEL, calibrate_threshold, report, wilson
from tiers.classifier.folds import calibration_folds, near_duplicate_groups
from tiers.classifier.folds import class_rounds as hold_out_classes
from tiers.classifier.head import DenseHead
from tiers.classifier.model import (
    OUT_OF_SCOPE,
    WEIGHTS,
    ClassifierModel,
    DenseView,
    Prediction,
    summarise,
)
from tiers.classifier.neighbours import Neighbours
from tiers.classifier.rows import DataError, Row, data_sha256
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
# The held-out labels' rows weigh this share of all rows when the confidence model is fitted.
UNSEEN_WEIGHT = 0.25
# Thresholds tried for the promise on unseen intents (quantiles of the held-out rows' confidences).
ESCALATION_GRID = 2000
# The linear model's solver stops when its gradient is this small (scikit-learn's default is
# 1e-4: twice the iterations for the same decisions; benchmarks/QUALITY.md).
SOLVER_TOL = 1e-3
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
    texts: list[str], labels: list[str], c: float, seed: int, dense: DenseView | None
) -> tuple[list[TfidfVectorizer], Any]:
    return fit_linear(
        texts,
        labels,
        _vectorizers(),
        LogisticRegression(C=c, max_iter=3000, tol=SOLVER_TOL, random_state=seed),
        dense,
    )


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
    groups = near_duplicate_groups(texts, labels)
    splits = calibration_folds(labels, folds, seed, groups)
    rounds = hold_out_classes(labels, class_rounds, seed, keep=(OUT_OF_SCOPE,))
    step(
        f"{len(splits)} folds ({len(texts) - len(set(groups.tolist()))} near-duplicate rows kept with"
        f" their twins) and {len(rounds)} rounds holding out labels, {jobs} at a time"
    )
    known, unknown, (vectorizers, estimator) = _score_rounds(
        Fold(texts, labels, c, seed, dense, units), splits, rounds, classes, jobs, step
    )
    weight, probabilities = head_weight(known.linear, known.network, [classes.index(y) for y in labels])
    if known.network is not None:
        step(f"head weight {weight} (lowest out-of-fold log loss of {HEAD_WEIGHTS})")
    excluded = classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in classes else None
    calibration = _calibrate(
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
    promise = calibration.metrics["promise"]
    step(
        f"threshold {calibration.threshold:.4f}: precision {promise['precision']:.4f} (95 % interval"
        f" {promise['interval'][0]:.4f}-{promise['interval'][1]:.4f}), coverage {promise['coverage']:.4f}"
        + (
            ""
            if promise["unseen_escalated"] is None
            else f", unseen intents escalated {promise['unseen_escalated']:.4f}"
        )
    )
    if known.network is not None:
        calibration.metrics["head_weight"] = weight
    if [str(k) for k in estimator.classes_] != classes:  # label_bias is indexed by this order
        raise RuntimeError("the fitted classes are not in the order the confidence model assumed")
    head = _final_head(units, labels, classes, seed, weight)
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
class Calibration:
    reliability: Reliability | None
    threshold: float
    metrics: dict[str, Any]


def _calibrate(
    out_of_fold: list[Summary],
    held_out: list[Summary],
    held_rows: np.ndarray,
    texts: list[str],
    labels: list[str],
    classes: list[str],
    target: float,
    unseen_escalation: float,
    bound: bool = True,
) -> Calibration:
    """The confidence model, fitted on the rows scored out of fold (right or wrong) and on the
    rows of held-out labels (every answer to them wrong; together weighted as UNSEEN_WEIGHT of
    the whole), and the threshold that keeps both promises (see `train`). Rows the out-of-scope
    class claims are never answered whatever the threshold: both are fitted on the rest."""
    correct = [classes[s.best] == y for s, y in zip(out_of_fold, labels, strict=True)]
    summaries = out_of_fold + held_out
    all_texts = texts + [texts[i] for i in held_rows]
    truth = correct + [False] * len(held_out)
    weight = UNSEEN_WEIGHT / (1.0 - UNSEEN_WEIGHT) * len(out_of_fold) / len(held_out) if held_out else 0.0
    weights = np.array([1.0] * len(out_of_fold) + [weight] * len(held_out))
    answerable = [i for i, s in enumerate(summaries) if s.ahead]
    reliability = fit_reliability(
        [summaries[i] for i in answerable],
        [word_count(all_texts[i]) for i in answerable],
        [truth[i] for i in answerable],
        len(classes),
        weights[answerable],
    )
    confidences = [confidence(reliability, s, t) for s, t in zip(summaries, all_texts, strict=True)]
    known = [i for i in answerable if i < len(out_of_fold)]
    threshold = calibrate_threshold(
        [confidences[i] for i in known],
        [truth[i] for i in known],
        target,
        level=CONFIDENCE_LEVEL if bound else None,
    )
    held_labels = [labels[i] for i in held_rows]
    if held_out and unseen_escalation > 0:
        threshold = max(
            threshold,
            escalation_threshold(
                confidences[len(out_of_fold) :], held_out, held_labels, unseen_escalation, bound
            ),
        )
    known_confidences = confidences[: len(out_of_fold)]
    metrics = report(
        [
            Prediction.at(classes[s.best], score, threshold, s.ahead)
            for s, score in zip(out_of_fold, known_confidences, strict=True)
        ],
        [None if y == OUT_OF_SCOPE else y for y in labels],
        threshold,
    )
    metrics["confidence"] = confidence_kind(reliability)
    answered = [s.ahead and score >= threshold for s, score in zip(summaries, confidences, strict=True)]
    metrics["promise"] = promise(
        answered[: len(out_of_fold)], correct, answered[len(out_of_fold) :], held_labels, target
    )
    metrics["promise"]["coverage"] = metrics["coverage"]
    metrics["promise"]["unseen_target"] = unseen_escalation if held_out else None
    metrics["promise"]["bound"] = bound
    outcomes = [
        OUT_OF_SCOPE_OUTCOME if not s.ahead else classes[s.best] if score >= threshold else BELOW
        for s, score in zip(out_of_fold, known_confidences, strict=True)
    ]
    metrics["baseline"] = drift_baseline(texts, known_confidences, outcomes)
    return Calibration(reliability, threshold, metrics)


def escalation_threshold(
    confidences: Sequence[float],
    summaries: Sequence[Summary],
    labels: Sequence[str],
    share: float,
    bound: bool = True,
) -> float:
    """The lowest threshold at which the lower bound of the 95 % interval of the expected share
    of an unseen intent's queries escalated reaches `share` (without `bound`: the mean itself),
    judged on the held-out labels' rows. The interval is over labels, not rows: an intent's
    queries escalate or not together, so the rows of one label are not independent evidence."""
    candidates = np.unique(np.concatenate([[0.0], np.asarray(confidences, dtype=float)]))
    if len(candidates) > ESCALATION_GRID:
        candidates = np.unique(np.quantile(candidates, np.linspace(0.0, 1.0, ESCALATION_GRID)))
    escalated = _escalated_by_label(confidences, summaries, labels, candidates)
    low = np.array([label_interval(column)[0] if bound else column.mean() for column in escalated.T])
    passing = np.nonzero(low >= share)[0]
    return float(np.nextafter(candidates[passing[0]], np.inf)) if len(passing) else 1.0


def _escalated_by_label(
    confidences: Sequence[float], summaries: Sequence[Summary], labels: Sequence[str], thresholds: np.ndarray
) -> np.ndarray:
    """labels x thresholds: the share of each label's rows escalated at each threshold, a row
    escalating when its confidence is at or below it (just above it answers) or the out-of-scope
    class claims it."""
    by_label: dict[str, list[float]] = {}
    for value, summary, label in zip(confidences, summaries, labels, strict=True):
        by_label.setdefault(label, []).append(value if summary.ahead else -np.inf)
    rows = []
    for values in by_label.values():
        ordered = np.sort(np.asarray(values))
        rows.append(np.searchsorted(ordered, thresholds, side="right") / len(ordered))
    return np.array(rows)


def label_interval(shares: np.ndarray) -> tuple[float, float]:
    """The 95 % interval (Student's t) of the mean of per-label shares."""
    count = len(shares)
    mean = float(np.mean(shares))
    if count < 2:
        return 0.0, 1.0
    half = float(stats.t.ppf(0.975, count - 1) * np.std(shares, ddof=1) / np.sqrt(count))
    return max(0.0, mean - half), min(1.0, mean + half)


def promise(
    answered: Sequence[bool],
    correct: Sequence[bool],
    unseen_answered: Sequence[bool],
    unseen_labels: Sequence[str],
    target: float,
) -> dict[str, Any]:
    """What a threshold promises, from the calibration rows: the precision of what it answers of
    the rows scored out of fold with its 95 % Wilson interval, and the share of held-out labels'
    rows it escalates (None without class rounds) with the 95 % interval over labels."""
    hits = sum(a and c for a, c in zip(answered, correct, strict=True))
    total = sum(answered)
    by_label: dict[str, list[bool]] = {}
    for was_answered, label in zip(unseen_answered, unseen_labels, strict=True):
        by_label.setdefault(label, []).append(not was_answered)
    shares = np.array([np.mean(escalated) for escalated in by_label.values()])
    return {
        "target": target,
        "precision": hits / total if total else 1.0,
        "interval": list(wilson(hits, total)),
        "unseen_escalated": 1.0 - sum(unseen_answered) / len(unseen_answered) if unseen_answered else None,
        "unseen_interval": list(label_interval(shares)) if unseen_answered else None,
        "unseen_rows": len(unseen_answered),
        "unseen_labels": len(by_label),
    }


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

    def fit_all(self) -> tuple[list[TfidfVectorizer], Any]:
        """The linear model on all rows."""
        return _fit(self.texts, self.labels, self.c, self.seed, self.dense)

    def score(self, number: int, fit_rows: np.ndarray, held_rows: np.ndarray) -> Scoring:
        """What models fitted on the fit rows say of the held rows: the linear model's
        probabilities, the head's log-probabilities (each with the classes of its columns: a
        round may lack a label), the shares of terms out of their vocabulary, and the similarity
        to each class's nearest fitted row."""
        texts, labels = self.texts, self.labels
        fit_texts = [texts[i] for i in fit_rows]
        fit_labels = [labels[i] for i in fit_rows]
        vectorizers, estimator = _fit(fit_texts, fit_labels, self.c, self.seed, self.dense)
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
            fitted = _fit_head(self.units[fit_rows], fit_labels, self.seed)
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


def _fit_head(units: np.ndarray, labels: Sequence[str], seed: int) -> MLPClassifier:
    """The head's network, fitted for HEAD_EPOCHS passes (a budget, not a convergence test)."""
    network = MLPClassifier((HEAD_UNITS,), alpha=HEAD_ALPHA, max_iter=HEAD_EPOCHS, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return network.fit((HEAD_INPUT_SCALE * units).astype(np.float32), list(labels))


def combined(linear: np.ndarray, network: np.ndarray | None, weight: float) -> np.ndarray:
    """The linear model's probabilities times the head's to the power `weight`, renormalised."""
    if network is None or weight == 0:
        return linear
    with np.errstate(divide="ignore", invalid="ignore"):  # a row no round held is all zeros
        logits = np.log(linear) + weight * network
        logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities


def head_weight(
    linear: np.ndarray, network: np.ndarray | None, truth: Sequence[int]
) -> tuple[float, np.ndarray]:
    """The weight of HEAD_WEIGHTS whose combined probabilities (the linear model's times the
    head's to that power, renormalised) have the lowest log loss on the true classes, and those
    probabilities. Without a head: 0 and the linear model's."""
    if network is None:
        return 0.0, linear
    rows = np.arange(len(truth))
    best: tuple[float, float, np.ndarray] | None = None
    for weight in HEAD_WEIGHTS:
        probabilities = combined(linear, network, weight)
        loss = float(-np.log(np.maximum(probabilities[rows, truth], 1e-300)).mean())
        if best is None or loss < best[0]:
            best = (loss, weight, probabilities)
    assert best is not None
    return best[1], best[2]


def fit_reliability(
    summaries: Sequence[Summary],
    words: Sequence[int],
    correct: Sequence[bool],
    classes: int,
    weights: np.ndarray | None = None,
) -> Reliability | None:
    """The confidence model (tiers/classifier/confidence.py) fitted on out-of-fold predictions, or
    None when they are all right or all wrong (nothing to tell apart; the margin is the confidence
    then). L2 strength C = 1."""
    if len(set(correct)) < 2:
        return None
    onehot = np.zeros((len(summaries), classes))
    onehot[np.arange(len(summaries)), [s.best for s in summaries]] = 1.0
    x = np.hstack([np.array([signals(s, n) for s, n in zip(summaries, words, strict=True)]), onehot])
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit(
        x, np.asarray(correct, dtype=int), sample_weight=weights
    )
    coef = fitted.coef_[0]
    right = np.asarray(correct, dtype=bool)
    typical = x[right, : len(SIGNALS)].mean(axis=0)
    label_term = float(
        (coef[len(SIGNALS) :][[s.best for s, ok in zip(summaries, right, strict=True) if ok]]).mean()
    )
    return Reliability(
        weights=tuple(float(w) for w in coef[: len(SIGNALS)]),
        label_bias=tuple(float(b) for b in coef[len(SIGNALS) :]),
        intercept=float(fitted.intercept_[0]),
        typical=(*(float(t) for t in typical), label_term),
    )
