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
        norms = np.sqrt(np.add.reduceat(new_values * new_values, new_indptr[:-1])) if len(order) else []
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

    def similarities(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`similarity` for every label at once (training scores held rows this way)."""
        out = np.zeros(len(self.starts) - 1)
        if len(ids) == 0 or self.indptr[-1] == 0:
            return out
        dense = np.zeros(self.features, dtype=ROW_VALUES)
        dense[ids] = weights / np.sqrt(weights @ weights)
        per_row = np.add.reduceat(self.values * dense[self.indices], self.indptr[:-1])
        for label in range(len(out)):
            lo, hi = self.starts[label], self.starts[label + 1]
            if hi > lo:
                out[label] = per_row[lo:hi].max()
        return out

    def embedding_similarity(self, label: int, unit: np.ndarray) -> float:
        """The cosine similarity of a unit embedding to label's nearest row's."""
        lo, hi = int(self.starts[label]), int(self.starts[label + 1])
        if self.units is None or lo == hi:
            return 0.0
        return float((self.units[lo:hi] @ unit.astype(ROW_VALUES)).max())

    def embedding_similarities(self, unit: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.starts) - 1)
        if self.units is None or len(self.units) == 0:
            return out
        per_row = self.units @ unit.astype(ROW_VALUES)
        for label in range(len(out)):
            lo, hi = self.starts[label], self.starts[label + 1]
            if hi > lo:
                out[label] = per_row[lo:hi].max()
        return out

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
