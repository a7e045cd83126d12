"""How close a text comes to the training rows of the label the classifier gives it.

A query of an intent the model never saw still gets some label's probabilities; what gives it
away is that no training row of that label says anything like it. The classifier keeps each
label's training rows (their TF-IDF vectors, and their embeddings when the model has them) and
reports the cosine similarity of the text to the nearest one, a signal of the confidence model
(tiers/classifier/confidence.py). Only the best label's rows are compared, a few hundred sparse
dot products in NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # the compiled kernel (tiers/classifier/_lean.c), when it could be built
    from tiers.classifier import _lean
except ImportError:  # pragma: no cover - exercised where no compiler is at hand
    _lean = None  # type: ignore[assignment]

ROW_VALUES = np.float32


@dataclass(frozen=True)
class Neighbours:
    """Training rows grouped by label: label k's rows are `starts[k]:starts[k + 1]`, each a
    unit-length sparse row (`indptr`, `indices`, `values`, as in CSR) and, with embeddings, a
    unit embedding in `units`."""

    features: int
    starts: np.ndarray  # int64, classes + 1
    indptr: np.ndarray  # int64, rows + 1
    indices: np.ndarray  # int32
    values: np.ndarray  # ROW_VALUES
    units: np.ndarray | None = None  # rows x dims, ROW_VALUES

    @classmethod
    def of_rows(
        cls,
        indptr: np.ndarray,
        indices: np.ndarray,
        values: np.ndarray,
        features: int,
        label_of_row: np.ndarray,
        classes: int,
        units: np.ndarray | None = None,
    ) -> Neighbours:
        """From rows in CSR parts and each row's class index: rows without features are left
        out, the rest scaled to unit length and grouped by class."""
        indptr = np.asarray(indptr, dtype=np.int64)
        lengths = np.diff(indptr)
        keep = np.nonzero(lengths > 0)[0]
        order = keep[np.argsort(np.asarray(label_of_row)[keep], kind="stable")]
        starts = np.searchsorted(np.asarray(label_of_row)[order], np.arange(classes + 1)).astype(np.int64)
        pieces = [np.arange(indptr[r], indptr[r + 1]) for r in order]
        take = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        new_indptr = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
        new_values = np.asarray(values, dtype=np.float64)[take]
        if len(order):
            norms = np.sqrt(np.add.reduceat(new_values * new_values, new_indptr[:-1]))
            new_values /= np.repeat(norms, lengths[order])
        return cls(
            features=features,
            starts=starts,
            indptr=new_indptr,
            indices=np.asarray(indices, dtype=np.int32)[take],
            values=new_values.astype(ROW_VALUES),
            units=None if units is None else np.ascontiguousarray(np.asarray(units)[order], dtype=ROW_VALUES),
        )

    def similarity(self, label: int, ids: np.ndarray, weights: np.ndarray) -> float:
        """The cosine similarity of the sparse vector (`ids`, `weights`) to label's nearest row."""
        lo, hi = int(self.starts[label]), int(self.starts[label + 1])
        if lo == hi or len(ids) == 0:
            return 0.0
        first, last = int(self.indptr[lo]), int(self.indptr[hi])
        dense = np.zeros(self.features, dtype=ROW_VALUES)
        dense[ids] = weights / np.sqrt(weights @ weights)
        products = self.values[first:last] * dense[self.indices[first:last]]
        return float(np.add.reduceat(products, self.indptr[lo:hi] - first).max())

    def nearest(self, rows: Any, chunk: int = 512, compiled: bool = True) -> np.ndarray:
        """`similarity` to every label for many texts at once: `rows` is a SciPy sparse matrix of
        their features (any row length); texts x labels. Training scores held rows this way (it
        imports SciPy; serving never calls it). With the compiled kernel (and `compiled`) one dense
        row of products per text in C, about three times faster than SciPy's sparse product, whose
        output is nearly dense here; the same figures either way."""
        from scipy import sparse

        matrix = sparse.csr_matrix(
            (self.values, self.indices, self.indptr), shape=(len(self.indptr) - 1, self.features)
        ).T.tocsr()
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1))).ravel()
        # single precision, as the rows are kept: a third faster than double
        scaled = sparse.csr_matrix(
            (sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ rows).astype(ROW_VALUES)
        )
        scaled.sort_indices()  # both paths sum each product in the same order
        out = np.zeros((rows.shape[0], len(self.starts) - 1))
        if compiled and _lean is not None:
            _lean.nearest_all(
                np.ascontiguousarray(scaled.data, dtype=ROW_VALUES),
                np.ascontiguousarray(scaled.indices, dtype=np.int32),
                np.ascontiguousarray(scaled.indptr, dtype=np.int64),
                np.ascontiguousarray(matrix.data, dtype=ROW_VALUES),
                np.ascontiguousarray(matrix.indices, dtype=np.int32),
                np.ascontiguousarray(matrix.indptr, dtype=np.int64),
                np.ascontiguousarray(self.starts, dtype=np.int64),
                out,
            )
            return out
        for first in range(0, rows.shape[0], chunk):
            products = (scaled[first : first + chunk] @ matrix).toarray()
            out[first : first + chunk] = self._per_label(products)
        return out

    def _per_label(self, products: np.ndarray) -> np.ndarray:
        """texts x rows -> texts x labels: the largest value over each label's rows (0: none)."""
        out = np.zeros((products.shape[0], len(self.starts) - 1))
        present = np.nonzero(np.diff(self.starts) > 0)[0]
        if len(present):
            out[:, present] = np.maximum.reduceat(products, self.starts[present], axis=1)
        return out

    def embedding_similarity(self, label: int, unit: np.ndarray) -> float:
        """The cosine similarity of a unit embedding to label's nearest row's."""
        lo, hi = int(self.starts[label]), int(self.starts[label + 1])
        if self.units is None or lo == hi:
            return 0.0
        return float((self.units[lo:hi] @ unit.astype(ROW_VALUES)).max())

    def nearest_embedding(self, units: np.ndarray) -> np.ndarray:
        """`embedding_similarity` to every label for many unit embeddings: texts x labels."""
        if self.units is None:
            return np.zeros((len(units), len(self.starts) - 1))
        return self._per_label(np.asarray(units, dtype=ROW_VALUES) @ self.units.T)

    def to_plain(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "starts": self.starts,
            "indptr": self.indptr,
            "indices": self.indices,
            "values": self.values,
            "units": self.units,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], classes: int, features: int, dims: int | None) -> Neighbours:
        found = cls(
            features=int(plain["features"]),
            starts=np.asarray(plain["starts"], dtype=np.int64),
            indptr=np.asarray(plain["indptr"], dtype=np.int64),
            indices=np.asarray(plain["indices"], dtype=np.int32),
            values=np.asarray(plain["values"], dtype=ROW_VALUES),
            units=None if plain.get("units") is None else np.asarray(plain["units"], dtype=ROW_VALUES),
        )
        rows = len(found.indptr) - 1
        if (
            found.features != features
            or len(found.starts) != classes + 1
            or found.starts[-1] != rows
            or found.indptr[-1] != len(found.indices)
            or len(found.values) != len(found.indices)
            or (found.units is not None and found.units.shape != (rows, dims))
        ):
            raise ValueError(f"training rows that do not fit {classes} classes and {features} features")
        return found
