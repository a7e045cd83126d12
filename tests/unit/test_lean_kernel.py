"""The compiled kernel (tiers/classifier/_lean.c) computes what the NumPy path computes, and
refuses bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from tests.intents import make_rows
from tiers.classifier import _lean
from tiers.classifier import model as classifier
from tiers.classifier.model import OUT_OF_SCOPE, ClassifierModel, LeanClassifier, Predictor
from tiers.classifier.neighbours import Neighbours
from tiers.classifier.training import train

TEXTS = st.lists(
    st.sampled_from([*"abcdeiknorstuwy XYZ é12.,!?'\t", "card ", "refund ", "my ", "lost "]), max_size=40
).map("".join)


@pytest.fixture(scope="module")
def model() -> ClassifierModel:
    rows = make_rows()
    rows += [(f"weather forecast {i} sunny", None) for i in range(12)]  # an out-of-scope class
    return train(rows, target_precision=0.95)


@pytest.fixture(scope="module")
def lean(model: ClassifierModel) -> LeanClassifier:
    return model.lean()


def test_this_install_serves_through_the_kernel(lean: LeanClassifier) -> None:
    assert lean.compiled  # `pip install` builds tiers/classifier/_lean.c; without it serving is ~5x slower


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_kernel_probabilities_equal_numpys(lean: LeanClassifier, text: str) -> None:
    found, expected = lean.probabilities(text), lean.numpy_probabilities(text)
    assert np.allclose(found, expected, rtol=0, atol=1e-12), text
    assert found.sum() == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS | st.sampled_from([t for t, _ in make_rows(seed=5)]))
def test_kernel_decisions_equal_numpys(model: ClassifierModel, lean: LeanClassifier, text: str) -> None:
    oos = model.classes.index(OUT_OF_SCOPE)
    for excluded in (None, oos, 0):
        summary = lean.decide(text, excluded)
        probs = lean.numpy_probabilities(text)
        others = np.delete(np.arange(len(probs)), [] if excluded is None else [excluded])
        best = int(others[probs[others].argmax()])
        assert summary.best == best
        assert summary.top == pytest.approx(probs[best], abs=1e-12)
        assert summary.runner_up == pytest.approx(np.delete(probs, best).max(), abs=1e-12)
        assert summary.entropy == pytest.approx(-(probs * np.log(probs)).sum(), abs=1e-9)


def test_predictor_escalates_out_of_scope_text_through_the_kernel(model: ClassifierModel) -> None:
    predictor = Predictor(model, min_confidence=0.0)
    summary = predictor.summary("weather forecast 3 sunny")
    assert summary.runner_up > summary.top  # the out-of-scope class leads
    assert predictor.predict("weather forecast 3 sunny").escalate


def test_repeated_terms_count_as_scikit_learn_counts_them(lean: LeanClassifier) -> None:
    for text in ("card card card card", "refund " * 40, "a" * 300):
        assert np.allclose(lean.probabilities(text), lean.numpy_probabilities(text), rtol=0, atol=1e-12)


def test_bad_input_is_refused_not_read() -> None:
    weights = np.ones((4, 3), dtype=np.float32)
    intercept, idf = np.zeros(3), np.ones(4)
    kernel = _lean.Kernel(weights, intercept, idf, (True, False))
    out = np.empty(3)
    kernel.probabilities(([0, 1, 1], [3]), out)
    assert out == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="outside"):
        kernel.probabilities(([4], []), out)
    with pytest.raises(ValueError, match="outside"):
        kernel.decide(([-1], []), -1)
    with pytest.raises(TypeError, match="tuple of 2 lists"):
        kernel.decide(([0],), -1)
    with pytest.raises(TypeError, match="list"):
        kernel.decide(((0,), []), -1)
    with pytest.raises(ValueError, match="room for 3"):
        kernel.probabilities(([0], []), np.empty(2))
    with pytest.raises(ValueError, match="excluded class 3"):
        kernel.decide(([0], []), 3)
    with pytest.raises(ValueError, match="format 'f'"):
        _lean.Kernel(weights.astype(np.float64), intercept, idf, (True,))
    with pytest.raises(ValueError, match="do not fit"):
        _lean.Kernel(weights, np.zeros(2), idf, (True,))
    with pytest.raises(ValueError, match="do not fit"):
        _lean.Kernel(weights, intercept, np.ones(5), (True,))


def test_the_nearest_row_refuses_rows_outside_the_matrix() -> None:
    kernel = _lean.Kernel(np.ones((4, 3), dtype=np.float32), np.zeros(3), np.ones(4), (True,))
    values = np.array([1.0, 0.6, 0.8], dtype=np.float32)
    indices = np.array([0, 1, 2], dtype=np.int32)
    indptr = np.array([0, 1, 3], dtype=np.int64)
    assert kernel.nearest(([1, 2],), values, indices, indptr, 0, 2) == pytest.approx((0.6 + 0.8) / np.sqrt(2))
    assert kernel.nearest(([0],), values, indices, indptr, 1, 2) == 0.0  # no shared term
    assert kernel.nearest(([],), values, indices, indptr, 0, 2) == 0.0
    with pytest.raises(ValueError, match="outside the matrix"):
        kernel.nearest(([0],), values, indices, indptr, 0, 3)
    with pytest.raises(ValueError, match="outside the matrix"):
        kernel.nearest(([0],), values, np.array([0, 1, 9], dtype=np.int32), indptr, 0, 2)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        kernel.nearest(([7],), values, indices, indptr, 0, 2)


def test_a_text_with_no_known_terms_gets_the_intercepts_softmax() -> None:
    kernel = _lean.Kernel(
        np.ones((2, 2), dtype=np.float32), np.array([0.0, np.log(3.0)]), np.ones(2), (True,)
    )
    out = np.empty(2)
    kernel.probabilities(([],), out)
    assert out == pytest.approx([0.25, 0.75])
    entropy = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert kernel.decide(([],), -1) == (1, pytest.approx(0.75), pytest.approx(0.25), pytest.approx(entropy))
    assert kernel.decide(([],), 1) == (0, pytest.approx(0.25), pytest.approx(0.75), pytest.approx(entropy))


def test_without_the_kernel_numpy_decides_the_same(
    model: ClassifierModel,
    lean: LeanClassifier,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(classifier, "_lean", None)
    fallback = model.lean()
    assert not fallback.compiled and "not built" in caplog.text
    oos = model.classes.index(OUT_OF_SCOPE)
    for text, _ in make_rows(seed=3)[:60]:
        for excluded in (None, oos):
            found, expected = fallback.decide(text, excluded), lean.decide(text, excluded)
            assert found.best == expected.best
            for field in ("top", "runner_up", "entropy", "unseen_words", "unseen_chars"):
                assert getattr(found, field) == pytest.approx(getattr(expected, field), abs=1e-12)
            # the nearest training row: the kernel sums in single precision, NumPy too but in another order
            assert found.neighbour == pytest.approx(expected.neighbour, abs=1e-5)
            assert 0.0 < expected.neighbour <= 1.0 + 1e-5  # single precision
        assert np.allclose(fallback.probabilities(text), lean.probabilities(text), rtol=0, atol=1e-12)


def test_long_texts_and_many_repeats_match(lean: LeanClassifier) -> None:
    rows = make_rows(seed=11)
    long_text = " ".join(t for t, _ in rows * 3)  # thousands of terms, many repeated
    assert len(long_text) > 10_000
    assert np.allclose(lean.probabilities(long_text), lean.numpy_probabilities(long_text), rtol=0, atol=1e-12)


def neighbours_of_texts(texts: list[str], labels: list[int], classes: int) -> tuple[Any, Any]:
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(texts)
    matrix = vectorizer.transform(texts).tocsr()
    near = Neighbours.of_rows(
        matrix.indptr, matrix.indices, matrix.data, matrix.shape[1], np.array(labels), classes
    )
    return near, vectorizer


def test_every_labels_nearest_row_in_c_is_what_scipys_product_gives() -> None:
    rows = make_rows()
    names = sorted({label for _, label in rows if label is not None})
    texts = [text for text, label in rows if label is not None]
    labels = [names.index(label) for _, label in rows if label is not None]
    near, vectorizer = neighbours_of_texts(texts, labels, len(names) + 1)  # the last label has no rows
    held = vectorizer.transform([*texts[:40], "nothing like any of them", "", "my card my card my card"])
    compiled = near.nearest(held)
    numpy_path = near.nearest(held, compiled=False)
    assert compiled.shape == (43, len(names) + 1)
    np.testing.assert_array_equal(compiled, numpy_path)  # summed in the same order: the same figures
    assert compiled[:40].max(axis=1) == pytest.approx(1.0, abs=1e-5)  # each training text's own row
    assert (compiled[:, -1] == 0).all() and (compiled[41] == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(TEXTS, min_size=2, max_size=12), st.lists(TEXTS, min_size=1, max_size=6))
def test_the_compiled_nearest_rows_agree_with_scipy_on_any_texts(fitted: list[str], held: list[str]) -> None:
    fitted = [f"{text} x" for text in fitted]  # every row has a term
    labels = [k % 3 for k in range(len(fitted))]
    near, vectorizer = neighbours_of_texts(fitted, labels, 3)
    matrix = vectorizer.transform(held)
    np.testing.assert_allclose(near.nearest(matrix), near.nearest(matrix, compiled=False), atol=1e-6)


def test_the_compiled_nearest_rows_refuse_arrays_that_do_not_fit() -> None:
    values = np.array([1.0], dtype=np.float32)
    indices = np.array([0], dtype=np.int32)
    indptr = np.array([0, 1], dtype=np.int64)
    starts = np.array([0, 1], dtype=np.int64)
    out = np.zeros((1, 1))
    _lean.nearest_all(values, indices, indptr, values, indices, indptr, starts, out)
    assert out[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="feature id"):
        _lean.nearest_all(values, np.array([5], dtype=np.int32), indptr, values, indices, indptr, starts, out)
    with pytest.raises(ValueError, match="posted row"):
        _lean.nearest_all(values, indices, indptr, values, np.array([3], dtype=np.int32), indptr, starts, out)
    with pytest.raises(ValueError, match="inconsistent"):
        _lean.nearest_all(values, indices, indptr, values, indices, indptr, starts, np.zeros((2, 1)))
