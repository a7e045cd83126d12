"""How training rows are split to score each one with a model that did not see it.

Two kinds of rounds (tiers/classifier/training.py fits one model per round):

- **folds**: every row held out once, its label's other rows fitted. Rows that are near
  duplicates of each other (paraphrases that share most of their words) stay in one fold, so a
  fold never scores a row whose twin it trained on: that would make the scores as optimistic as
  the training rows themselves.
- **class rounds**: whole labels held out (a share of the labels per round, rotating so every
  label is held out once), their rows scored as the out-of-scope queries they are to a model that
  never saw the label. The confidence model and the threshold then learn what an unseen intent
  looks like, not only the out-of-scope rows a user happens to have.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

Split = tuple[np.ndarray, np.ndarray]  # (fitted rows, held rows)

# Two rows of one label whose word unigram-and-bigram TF-IDF vectors have at least this cosine
# similarity are near duplicates (one fold). 0.8 joins rewordings such as "How do I top up my
# card?" / "how can I top-up my card" and keeps apart rows that share a topic but not the words.
DUPLICATE_SIMILARITY = 0.8


def near_duplicate_groups(
    texts: Sequence[str], labels: Sequence[str], similarity: float = DUPLICATE_SIMILARITY
) -> np.ndarray:
    """A group number per row: rows of one label joined (transitively) when their word TF-IDF
    vectors reach `similarity`; compared within each label only, so the cost is the sum of the
    labels' squared sizes."""
    vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    matrix = vectors.fit_transform(texts).tocsr()
    parent = np.arange(len(texts))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for members in by_label.values():
        if len(members) < 2:
            continue
        block = matrix[members]
        close = sparse.triu(block @ block.T, k=1).tocoo()
        for a, b, value in zip(close.row, close.col, close.data, strict=True):
            if value >= similarity:
                ra, rb = root(members[a]), root(members[b])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(len(texts))])


def calibration_folds(
    labels: Sequence[str], folds: int, seed: int, groups: np.ndarray | None = None
) -> list[Split]:
    """(fit rows, held rows) pairs: each row held out once, a group's rows in one fold; stratified
    by label when every label has a group for each fold."""
    n = len(labels)
    if groups is None:
        groups = np.arange(n)
    folds = min(folds, len(set(groups.tolist())))
    per_label: dict[str, set[int]] = {}
    for label, group in zip(labels, groups.tolist(), strict=True):
        per_label.setdefault(label, set()).add(group)
    splitter: Any
    if min(len(g) for g in per_label.values()) >= folds:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    else:
        # GroupKFold spreads groups by size, deterministically: shuffle the group numbers first
        order = list(dict.fromkeys(groups.tolist()))
        random.Random(seed).shuffle(order)
        rank = {g: k for k, g in enumerate(order)}
        groups = np.array([rank[g] for g in groups.tolist()])
        splitter = GroupKFold(folds)
    return [(fit, held) for fit, held in splitter.split(np.zeros(n), list(labels), groups)]


def class_rounds(labels: Sequence[str], rounds: int, seed: int, keep: Sequence[str] = ()) -> list[Split]:
    """(fit rows, held rows) pairs holding out whole labels: the labels (but `keep`, which are
    always fitted) shuffled and dealt into `rounds` rounds, so each is held out once. A round fits
    every row of the other labels. At most one round per label, and at least two labels are
    fitted in each."""
    held_labels = sorted(set(labels) - set(keep))
    random.Random(seed).shuffle(held_labels)
    rounds = min(rounds, len(held_labels))
    if rounds < 1 or len(set(labels)) - -(-len(held_labels) // rounds) < 2:
        return []
    label_of = np.array(labels, dtype=object)
    splits = []
    for number in range(rounds):
        held = np.isin(label_of, held_labels[number::rounds])
        splits.append((np.nonzero(~held)[0], np.nonzero(held)[0]))
    return splits
