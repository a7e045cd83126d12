"""The head over the embeddings: its NumPy scores equal scikit-learn's network, the kernel's equal
NumPy's, the served probabilities are the linear model's times the head's, the weight is the one
with the lowest log loss, model files keep and check it, and folds fitted in parallel change nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.intents import MIXED_TEXTS, make_rows
from tiers.classifier import _lean
from tiers.classifier.embeddings import StaticEmbeddings
from tiers.classifier.head import DenseHead
from tiers.classifier.head_fitting import HEAD_INPUT_SCALE, fit_head, head_weight
from tiers.classifier.model import OUT_OF_SCOPE, ClassifierModel, ModelError
from tiers.classifier.rows import DataError
from tiers.classifier.training import train


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str | None]]:
    return make_rows()


@pytest.fixture(scope="module")
def network(loaded: StaticEmbeddings, rows: list[tuple[str, str | None]]):  # type: ignore[no-untyped-def]
    units = np.array([loaded.embed(t) for t, _ in rows])
    return fit_head(units, [label or OUT_OF_SCOPE for _, label in rows], seed=0)


@pytest.fixture(scope="module")
def model(
    loaded: StaticEmbeddings,
    network,
    rows: list[tuple[str, str | None]],  # type: ignore[no-untyped-def]
) -> ClassifierModel:
    """The embeddings model trained on the rows, with a head of weight 0.5 fitted on them (set
    here, whatever weight training chose, so the head is surely there)."""
    trained = train(rows, target_precision=0.95, embeddings=True, folds=3)
    head = DenseHead.folded(network.coefs_, network.intercepts_, HEAD_INPUT_SCALE, 0.5)
    return replace(trained, head=head)


def test_the_heads_scores_are_scikit_learns_network(
    loaded: StaticEmbeddings,
    network,
    rows: list[tuple[str, str | None]],  # type: ignore[no-untyped-def]
) -> None:
    head = DenseHead.folded(network.coefs_, network.intercepts_, HEAD_INPUT_SCALE, 1.0)
    units = np.array([loaded.embed(t) for t, _ in rows[:200]] + [np.zeros(loaded.dims)])
    scores = np.array([head.scores(u) for u in units])
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = network.predict_proba((HEAD_INPUT_SCALE * units).astype(np.float32))
    assert np.abs(probs - expected).max() < 1e-5


@pytest.fixture(scope="module")
def lean(model: ClassifierModel, loaded: StaticEmbeddings) -> Any:
    """The model's lean path, built once (loading and checking the embeddings takes far longer
    than a decision)."""
    return model.lean(loaded)


@settings(max_examples=200, deadline=None)
@given(text=MIXED_TEXTS | st.sampled_from([t for t, _ in make_rows(seed=6)]))
def test_with_a_head_the_kernel_equals_numpy(model: ClassifierModel, lean: Any, text: str) -> None:
    assert lean.compiled and model.head is not None
    # the hidden layer is single precision, summed in another order than NumPy's
    assert np.allclose(lean.probabilities(text), lean.numpy_probabilities(text), rtol=0, atol=1e-6)
    summary = lean.decide(text, None)
    numpy_probs = lean.numpy_probabilities(text)
    assert abs(summary.top - numpy_probs.max()) < 1e-6
    assert abs(numpy_probs[summary.best] - numpy_probs.max()) < 1e-6  # the best, or tied within 1e-6


def test_served_probabilities_are_the_linear_models_times_the_heads(
    model: ClassifierModel, loaded: StaticEmbeddings
) -> None:
    assert model.head is not None
    with_head, linear = model.lean(loaded), replace(model, head=None).lean(loaded)
    for text, _ in [*make_rows(seed=9)[:100], ("", None)]:
        combined = linear.probabilities(text) * np.exp(model.head.scores(loaded.embed(text)))
        combined /= combined.sum()
        assert np.allclose(with_head.probabilities(text), combined, rtol=0, atol=1e-6)
    # the head changes some answers' probabilities (it is not a no-op)
    text = make_rows(seed=9)[0][0]
    assert not np.allclose(with_head.probabilities(text), linear.probabilities(text), atol=1e-3)


def test_the_head_weight_is_the_one_with_the_lowest_log_loss() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=400)
    linear = np.full((400, 4), 0.25)
    informed = np.log(np.where(np.eye(4)[truth] == 1, 0.7, 0.1))
    weight, probs = head_weight(linear, informed, list(truth))
    assert weight == 0.5  # the largest: the head knows, the linear model does not
    assert np.allclose(probs.sum(axis=1), 1.0)
    wrong = np.log(np.where(np.eye(4)[(truth + 1) % 4] == 1, 0.7, 0.1))
    assert head_weight(linear, wrong, list(truth))[0] == 0.0
    assert head_weight(linear, None, list(truth)) == (0.0, linear)


def test_training_with_embeddings_chooses_and_records_the_head_weight(
    rows: list[tuple[str, str | None]],
) -> None:
    trained = train(rows, target_precision=0.95, embeddings=True, folds=3)
    weight = trained.metrics["out_of_fold"]["head_weight"]
    assert weight in (0.0, 0.125, 0.25, 0.375, 0.5)
    assert (trained.head is None) == (weight == 0.0)
    assert "head_weight" not in train(rows, target_precision=0.95, folds=3).metrics["out_of_fold"]


def test_a_two_class_head_scores_both_classes(loaded: StaticEmbeddings) -> None:
    rows = [(t, lab) for t, lab in make_rows() if lab in ("card_arrival", "lost_card")]
    units = np.array([loaded.embed(t) for t, _ in rows])
    network = fit_head(units, [str(lab) for _, lab in rows], seed=0)
    head = DenseHead.folded(network.coefs_, network.intercepts_, HEAD_INPUT_SCALE, 1.0)
    assert head.out_weights.shape[1] == 2
    scores = np.array([head.scores(u) for u in units])
    probs = 1 / (1 + np.exp(scores[:, 0] - scores[:, 1]))
    expected = network.predict_proba((HEAD_INPUT_SCALE * units).astype(np.float32))[:, 1]
    assert np.abs(probs - expected).max() < 1e-5


def test_a_head_round_trips_and_a_damaged_one_is_refused(model: ClassifierModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m.joblib")
    loaded = ClassifierModel.load(tmp_path / "m.joblib")
    assert loaded.head is not None and model.head is not None
    assert np.array_equal(loaded.head.hidden_weights, model.head.hidden_weights)
    assert np.array_equal(loaded.head.out_bias, model.head.out_bias)
    text = make_rows(seed=9)[1][0]
    assert np.array_equal(loaded.lean().probabilities(text), model.lean().probabilities(text))
    stored = joblib.load(tmp_path / "m.joblib")
    head = stored["head"]
    joblib.dump({**stored, "head": {**head, "out_bias": head["out_bias"][:-1]}}, tmp_path / "bad.joblib")
    with pytest.raises(ModelError, match=r"damaged model file.*head"):
        ClassifierModel.load(tmp_path / "bad.joblib")
    joblib.dump({**stored, "embeddings": None}, tmp_path / "headless.joblib")
    with pytest.raises(ModelError, match=r"damaged model file \(a head over embeddings, but no embeddings"):
        ClassifierModel.load(tmp_path / "headless.joblib")
    joblib.dump({**stored, "format": 4, "head": None}, tmp_path / "old.joblib")
    assert ClassifierModel.load(tmp_path / "old.joblib").head is None


def test_the_kernel_refuses_a_head_that_does_not_fit(model: ClassifierModel) -> None:
    assert model.head is not None
    lean = model.lean()
    head = model.head
    weights = np.ascontiguousarray(lean._weights)
    pieces = StaticEmbeddings.load().weights.view(np.uint16)
    idf = lean._features.idf
    arrays = (head.hidden_weights, head.hidden_bias, head.out_weights, head.out_bias)
    args = (weights, lean._intercept, idf, lean._features.sublinear, pieces, 0.75)
    _lean.Kernel(*args, arrays)  # fits
    with pytest.raises(ValueError, match="does not fit"):
        narrow = np.ascontiguousarray(head.out_weights[:, :-1])
        _lean.Kernel(*args, (head.hidden_weights, head.hidden_bias, narrow, head.out_bias))
    with pytest.raises(ValueError, match="format 'f'"):
        _lean.Kernel(*args, (head.hidden_weights.astype(np.float64), *arrays[1:]))
    with pytest.raises(ValueError, match="with pieces"):
        linear_only = np.ascontiguousarray(weights[: -pieces.shape[1]])
        _lean.Kernel(linear_only, lean._intercept, idf, lean._features.sublinear, None, 0.0, arrays)


def test_folds_fitted_in_worker_processes_give_the_same_model(rows: list[tuple[str, str | None]]) -> None:
    one = train(rows, target_precision=0.95, embeddings=True, folds=4, jobs=1)
    two = train(rows, target_precision=0.95, embeddings=True, folds=4, jobs=2)
    # the same up to rounding: a worker's linear algebra may split its sums over fewer threads
    assert one.threshold == pytest.approx(two.threshold, abs=1e-6)
    for key in ("coverage", "accuracy_answered", "top1_accuracy", "head_weight"):
        assert one.metrics["out_of_fold"][key] == two.metrics["out_of_fold"][key]
    assert (one.reliability is None) == (two.reliability is None)  # None: every answer was right
    if one.reliability is not None and two.reliability is not None:
        assert np.allclose(one.reliability.weights, two.reliability.weights, atol=1e-6)
    assert np.allclose(one.coef, two.coef, atol=1e-6)
    assert (one.head is None) == (two.head is None)
    if one.head is not None and two.head is not None:
        assert np.allclose(one.head.out_weights, two.head.out_weights, atol=1e-6)
    with pytest.raises(DataError, match="at least 1 job"):
        train(rows, jobs=0)
