"""The classifier's linear model: multinomial logistic regression fitted by L-BFGS with a short
memory.

The model and objective are scikit-learn's `LogisticRegression(solver="lbfgs")`: the mean
cross-entropy of the softmax over classes plus the L2 penalty `||W||^2 / (2 C n)` (intercepts not
penalised), minimised from zero until the largest projected gradient is below `tol`; the fitted
attributes (`coef_`, `intercept_`, `classes_`, `n_iter_`) are named as scikit-learn names them.
What differs is the solver's memory: `memory` corrections (SciPy's L-BFGS-B keeps 10 unless told,
and scikit-learn does not let it be told). A classifier fit has millions of weights (39,000
features x 154 labels), and the solver's own update, linear in the memory, was half of a fit's
time at 10; at 5 (and a tolerance of 5e-4, tiers/classifier/training.py) a 16,000-row fit takes
about 0.7 of scikit-learn's time (benchmarks/QUALITY.md, after the training-time table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, sparse

DEFAULT_MEMORY = 5


class SoftmaxRegression:
    """Fits on a sparse or dense matrix of rows; arithmetic in the matrix's precision (float32
    or float64), the objective and its gradient summed in float64."""

    def __init__(
        self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 3000, memory: int = DEFAULT_MEMORY
    ) -> None:
        if C <= 0 or tol <= 0 or max_iter < 1 or memory < 1:
            raise ValueError(
                "C and tol must be positive and max_iter and memory at least 1:"
                f" C={C}, tol={tol}, max_iter={max_iter}, memory={memory}"
            )
        self.C, self.tol, self.max_iter, self.memory = C, tol, max_iter, memory

    def fit(self, x: Any, y: Sequence[Any]) -> SoftmaxRegression:
        classes, target = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"fitting needs at least two classes, found {len(classes)}")
        matrix = sparse.csr_matrix(x)
        if matrix.dtype not in (np.float32, np.float64):
            matrix = matrix.astype(np.float64)
        rows, features = matrix.shape
        if rows != len(target):
            raise ValueError(f"{rows} rows and {len(target)} labels")
        transposed = matrix.T.tocsr()  # the gradient's product, row by row
        count, penalty, dtype = len(classes), 1.0 / (self.C * rows), matrix.dtype
        every = np.arange(rows)

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            weights = flat.reshape(features + 1, count)  # the features' rows, then the intercepts
            coef = weights[:features]
            raw = np.asarray(matrix @ coef.astype(dtype))
            raw += weights[features].astype(dtype)
            raw -= raw.max(axis=1, keepdims=True)
            picked = raw[every, target]
            np.exp(raw, out=raw)
            total = raw.sum(axis=1, dtype=np.float64)
            loss = float(np.mean(np.log(total) - picked)) + 0.5 * penalty * float(
                flat[: coef.size] @ flat[: coef.size]
            )
            raw *= (1.0 / (total * rows)).astype(dtype)[:, None]  # the softmax, over the row count
            raw[every, target] -= dtype.type(1.0 / rows)
            gradient = np.empty_like(weights)
            np.multiply(coef, penalty, out=gradient[:features])
            gradient[:features] += transposed @ raw
            gradient[features] = raw.sum(axis=0, dtype=np.float64)
            return loss, gradient.ravel()

        result = optimize.minimize(
            objective,
            np.zeros((features + 1) * count, dtype=dtype),
            method="L-BFGS-B",
            jac=True,
            options={
                "maxiter": self.max_iter,
                "maxcor": self.memory,
                "maxls": 50,
                "gtol": self.tol,
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        weights = result.x.reshape(features + 1, count)
        self.coef_ = np.ascontiguousarray(weights[:features].T)
        self.intercept_ = weights[features].copy()
        self.classes_ = classes
        self.n_iter_ = np.array([result.nit])
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        raw = np.asarray(x @ self.coef_.T) + self.intercept_
        raw -= raw.max(axis=1, keepdims=True)
        exp = np.exp(raw)
        return exp / exp.sum(axis=1, keepdims=True)
