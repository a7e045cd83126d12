"""The classifier's own L-BFGS fit reaches scikit-learn's logistic regression's optimum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from tiers.classifier.solver import SoftmaxRegression


def _data(rows: int = 300, features: int = 40, classes: int = 4) -> tuple[sparse.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(7)
    truth = rng.normal(size=(features, classes))
    x = sparse.random(rows, features, density=0.25, random_state=3, format="csr")
    scores = x @ truth + rng.normal(scale=0.5, size=(rows, classes))
    labels = np.array([f"label-{k}" for k in scores.argmax(axis=1)])
    return x, labels


@pytest.mark.parametrize("memory", [10, 5, 2])
def test_the_same_optimum_as_scikit_learn(memory: int) -> None:
    x, y = _data()
    reference = LogisticRegression(C=3.0, tol=1e-9, max_iter=20_000).fit(x, y)
    fitted = SoftmaxRegression(C=3.0, tol=1e-9, max_iter=20_000, memory=memory).fit(x, y)
    assert list(fitted.classes_) == list(reference.classes_)
    assert np.abs(fitted.coef_ - reference.coef_).max() < 1e-5
    assert np.abs(fitted.intercept_ - reference.intercept_).max() < 1e-5
    assert np.abs(fitted.predict_proba(x) - reference.predict_proba(x)).max() < 1e-6


def test_with_scikit_learns_memory_it_takes_scikit_learns_steps() -> None:
    x, y = _data()
    reference = LogisticRegression(C=20.0, tol=1e-3, max_iter=3000).fit(x, y)
    fitted = SoftmaxRegression(C=20.0, tol=1e-3, max_iter=3000, memory=10).fit(x, y)
    assert fitted.n_iter_[0] == reference.n_iter_[0]
    assert np.abs(fitted.predict_proba(x) - reference.predict_proba(x)).max() < 1e-6


def test_single_precision_rows_give_nearly_the_same_model() -> None:
    x, y = _data()
    double = SoftmaxRegression(C=3.0, tol=1e-6).fit(x, y)
    single = SoftmaxRegression(C=3.0, tol=1e-6).fit(x.astype(np.float32), y)
    assert np.abs(single.predict_proba(x) - double.predict_proba(x)).max() < 1e-3


def test_bad_input_is_refused() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="two classes"):
        SoftmaxRegression().fit(x, np.array(["same"] * x.shape[0]))
    with pytest.raises(ValueError, match="rows and"):
        SoftmaxRegression().fit(x, y[:-1])
    with pytest.raises(ValueError, match="positive"):
        SoftmaxRegression(C=0.0)
    with pytest.raises(ValueError, match="at least 1"):
        SoftmaxRegression(memory=0)
