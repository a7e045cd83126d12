"""TF-IDF features of one text, computed from a fitted vectorizer's parts without scikit-learn.

Serving needs only what fitting produced: the vocabulary, the idf weights and the analyzer's
settings. Keeping scikit-learn (and SciPy) out of the serving process saves about 80 MiB per
worker and milliseconds per call. The analyzers below reproduce scikit-learn's `word` and
`char_wb` analyzers for the settings tiergate trains with (no accent stripping, stop words, custom
preprocessor or tokenizer); `tests/unit/test_tfidf.py` checks them against scikit-learn's own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

ANALYZERS = ("word", "char_wb")


class Unseen(NamedTuple):
    """The share of a text's terms that training never saw: of its words and word n-grams, and of
    its character n-grams (1.0 when it has none of that kind, or no such analyzer is fitted)."""

    words: float
    chars: float


def word_analyzer(
    token_pattern: str, ngram_range: tuple[int, int], lowercase: bool
) -> Callable[[str], list[str]]:
    find = re.compile(token_pattern).findall
    low, high = ngram_range

    def analyze(text: str) -> list[str]:
        tokens: list[str] = find(text.lower() if lowercase else text)
        if high == 1:
            return tokens
        grams = list(tokens) if low == 1 else []
        count = len(tokens)
        for n in range(max(low, 2), min(high, count) + 1):
            grams.extend(" ".join(tokens[i : i + n]) for i in range(count - n + 1))
        return grams

    return analyze


def _char_wb_slices(size: int, low: int, high: int) -> tuple[slice, ...]:
    """Where the n-grams of a padded word of `size` characters are, in scikit-learn's order."""
    spans: list[slice] = []
    for n in range(low, high + 1):
        if n >= size:  # a word shorter than n counts once, whole, and longer n add nothing
            spans.append(slice(0, size))
            break
        spans.extend(slice(i, i + n) for i in range(size - n + 1))
    return tuple(spans)


def char_wb_analyzer(ngram_range: tuple[int, int], lowercase: bool) -> Callable[[str], list[str]]:
    low, high = ngram_range
    # The slices for every word length up to 64 are made once; cutting a word is then one map in C.
    known = tuple(_char_wb_slices(size, low, high) for size in range(65))

    def analyze(text: str) -> list[str]:
        grams: list[str] = []
        extend = grams.extend
        for word in (text.lower() if lowercase else text).split():
            padded = f" {word} "
            size = len(padded)
            extend(map(padded.__getitem__, known[size] if size <= 64 else _char_wb_slices(size, low, high)))
        return grams

    return analyze


@dataclass(frozen=True, slots=True)
class TfidfFeatures:
    """One fitted vectorizer: sublinear or raw term counts times idf, l2-normalised."""

    analyzer: str
    ngram_range: tuple[int, int]
    lowercase: bool
    token_pattern: str
    sublinear: bool
    vocabulary: dict[str, int]
    idf: np.ndarray
    analyze: Callable[[str], list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.analyzer not in ANALYZERS:
            raise ValueError(f"analyzer {self.analyzer!r} is not one of {ANALYZERS}")
        analyze = (
            word_analyzer(self.token_pattern, self.ngram_range, self.lowercase)
            if self.analyzer == "word"
            else char_wb_analyzer(self.ngram_range, self.lowercase)
        )
        object.__setattr__(self, "analyze", analyze)

    @property
    def size(self) -> int:
        return len(self.idf)

    def to_plain(self) -> dict[str, Any]:
        """Plain values (and one array) for a model file; the vocabulary in feature order."""
        terms = [""] * len(self.vocabulary)
        for term, index in self.vocabulary.items():
            terms[index] = term
        return {
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "token_pattern": self.token_pattern,
            "sublinear": self.sublinear,
            "terms": terms,
            "idf": np.asarray(self.idf, dtype=np.float64),
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> TfidfFeatures:
        terms = list(plain["terms"])
        idf = np.asarray(plain["idf"], dtype=np.float64)
        if len(terms) != len(idf):
            raise ValueError(f"{len(terms)} terms but {len(idf)} idf weights")
        low, high = plain["ngram_range"]
        return cls(
            analyzer=str(plain["analyzer"]),
            ngram_range=(int(low), int(high)),
            lowercase=bool(plain["lowercase"]),
            token_pattern=str(plain["token_pattern"]),
            sublinear=bool(plain["sublinear"]),
            vocabulary={term: index for index, term in enumerate(terms)},
            idf=idf,
        )


class _TextTerms:
    """Feature ids of a text's terms, counted: the analyzer over the whole text."""

    def __init__(self, analyze: Callable[[str], list[str]], vocabulary: dict[str, int]) -> None:
        self._analyze = analyze
        self._vocabulary = vocabulary

    def ids(self, text: str) -> list[int]:
        """The feature ids of the text's known terms, repeats included."""
        return [i for i in map(self._vocabulary.get, self._analyze(text)) if i is not None]

    def counted(self, text: str) -> tuple[list[int], int]:
        """`ids`, and how many terms the text has, known or not."""
        terms = self._analyze(text)
        return [i for i in map(self._vocabulary.get, terms) if i is not None], len(terms)


class _WordTerms:
    """The same for `char_wb` n-grams, which never cross a word: each word's feature ids are
    worked out once and kept (up to `WORD_CACHE` words, then forgotten all at once), so a text
    costs a dictionary lookup per word."""

    WORD_CACHE = 20_000

    def __init__(self, analyze: Callable[[str], list[str]], vocabulary: dict[str, int], lowercase: bool):
        self._analyze = analyze
        self._vocabulary = vocabulary
        self._lowercase = lowercase
        self._words: dict[str, tuple[tuple[int, ...], int]] = {}  # word: (known ids, all n-grams)

    def _word(self, word: str) -> tuple[tuple[int, ...], int]:
        words = self._words
        if len(words) >= self.WORD_CACHE:
            words.clear()
        grams = self._analyze(word)
        found = words[word] = (
            tuple(i for i in map(self._vocabulary.get, grams) if i is not None),
            len(grams),
        )
        return found

    def ids(self, text: str) -> list[int]:
        return self.counted(text)[0]

    def counted(self, text: str) -> tuple[list[int], int]:
        """The feature ids of the text's known n-grams, and how many n-grams it has."""
        words = self._words
        ids: list[int] = []
        total = 0
        for word in (text.lower() if self._lowercase else text).split():
            found = words.get(word) or self._word(word)
            ids += found[0]
            total += found[1]
        return ids, total


class StackedTfidf:
    """Several fitted vectorizers side by side (as scikit-learn's hstack of their outputs): the
    features of one text as one sparse row of (feature ids, weights), in a handful of NumPy calls.
    `term_ids` gives the step before weighting: each vectorizer's feature ids, for the compiled
    kernel (tiers/classifier/_lean.c), which does the weighting itself."""

    def __init__(self, parts: tuple[TfidfFeatures, ...]) -> None:
        terms: list[_TextTerms | _WordTerms] = []
        offset = 0
        for part in parts:
            vocabulary = (
                part.vocabulary if offset == 0 else {t: i + offset for t, i in part.vocabulary.items()}
            )
            terms.append(
                _WordTerms(part.analyze, vocabulary, part.lowercase)
                if part.analyzer == "char_wb"
                else _TextTerms(part.analyze, vocabulary)
            )
            offset += part.size
        self._parts = tuple(terms)
        self._analyzers = tuple(part.analyzer for part in parts)
        self.size = offset
        self.idf = np.concatenate([part.idf for part in parts]) if parts else np.zeros(0)
        self.sublinear = tuple(part.sublinear for part in parts)

    def term_ids(self, text: str) -> tuple[list[int], ...]:
        """Each vectorizer's feature ids of the text's known terms (offset into the stacked
        features), repeats included."""
        return tuple(part.ids(text) for part in self._parts)

    def counted_ids(self, text: str) -> tuple[tuple[list[int], ...], Unseen]:
        """`term_ids`, and the share of the text's terms each kind of analyzer did not know."""
        ids: list[list[int]] = []
        known = {"word": 0, "char_wb": 0}
        total = {"word": 0, "char_wb": 0}
        for part, analyzer in zip(self._parts, self._analyzers, strict=True):
            found, count = part.counted(text)
            ids.append(found)
            known[analyzer] += len(found)
            total[analyzer] += count
        return tuple(ids), Unseen(
            *(1.0 - known[kind] / total[kind] if total[kind] else 1.0 for kind in ("word", "char_wb"))
        )

    def transform(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(feature ids, weights) of the text's known terms; None when it has none."""
        return self.weigh(self.term_ids(text))

    def weigh(self, term_ids: tuple[list[int], ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """`transform` from the text's `term_ids`."""
        ids: list[int] = []
        counts: list[int] = []
        spans: list[tuple[int, int]] = []  # (start, end) of each part that found terms
        sublinear: list[bool] = []
        for found_ids, flag in zip(term_ids, self.sublinear, strict=True):
            found = Counter(found_ids)  # runs in C
            if found:
                start = len(ids)
                ids += found.keys()
                counts += found.values()
                spans.append((start, len(ids)))
                sublinear.append(flag)
        if not ids:
            return None
        index = np.array(ids, dtype=np.intp)
        tf = np.array(counts, dtype=np.float64)
        if all(sublinear):
            np.log(tf, out=tf)
            tf += 1.0  # as scikit-learn computes it
        else:
            for (start, end), flag in zip(spans, sublinear, strict=True):
                if flag:
                    tf[start:end] = np.log(tf[start:end]) + 1.0
        weights = tf * self.idf[index]
        if len(spans) == 1:  # each part is l2-normalised on its own
            weights /= np.sqrt(weights @ weights)
        else:
            norms = np.sqrt(np.add.reduceat(weights * weights, [start for start, _ in spans]))
            weights /= np.repeat(norms, [end - start for start, end in spans])
        return index, weights
