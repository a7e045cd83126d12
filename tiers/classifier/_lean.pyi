"""Types of the compiled kernel (tiers/classifier/_lean.c)."""

import numpy as np

class Kernel:
    def __init__(
        self,
        weights: np.ndarray,
        intercept: np.ndarray,
        idf: np.ndarray,
        sublinear: tuple[bool, ...],
        pieces: np.ndarray | None = None,
        scale: float = 0.0,
        head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None: ...
    def probabilities(self, parts: tuple[list[int], ...], out: np.ndarray) -> None: ...
    def decide(self, parts: tuple[list[int], ...], excluded: int) -> tuple[int, float, float, float]: ...
    def nearest(
        self,
        parts: tuple[list[int], ...],
        values: np.ndarray,
        indices: np.ndarray,
        indptr: np.ndarray,
        first: int,
        last: int,
    ) -> float: ...
    def nearest_embedding(self, piece_ids: list[int], units: np.ndarray, first: int, last: int) -> float: ...

def nearest_all(
    values: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    postings: np.ndarray,
    posted_rows: np.ndarray,
    postings_indptr: np.ndarray,
    starts: np.ndarray,
    out: np.ndarray,
) -> None: ...
