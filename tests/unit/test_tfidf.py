"""The lean analyzers produce exactly scikit-learn's terms, for every setting tiergate trains with."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from tiers.classifier.tfidf import StackedTfidf, TfidfFeatures, char_wb_analyzer, word_analyzer
from tiers.classifier.training import features_of

TEXTS = st.text(
    alphabet=st.sampled_from([*"abcXYZ éÜß 12\t\n\r.,!?'-_", "\xa0", "\u2003", "\x1c"]), max_size=60
)
WORD = r"(?u)\b\w+\b"


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, low=st.integers(1, 3), extra=st.integers(0, 2), lowercase=st.booleans())
def test_word_terms_equal_scikit_learns(text: str, low: int, extra: int, lowercase: bool) -> None:
    for pattern in (WORD, r"(?u)\b\w\w+\b"):
        reference = TfidfVectorizer(
            analyzer="word", ngram_range=(low, low + extra), lowercase=lowercase, token_pattern=pattern
        ).build_analyzer()
        assert word_analyzer(pattern, (low, low + extra), lowercase)(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, low=st.integers(1, 4), extra=st.integers(0, 3), lowercase=st.booleans())
def test_char_wb_terms_equal_scikit_learns(text: str, low: int, extra: int, lowercase: bool) -> None:
    reference = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(low, low + extra), lowercase=lowercase
    ).build_analyzer()
    assert char_wb_analyzer((low, low + extra), lowercase)(text) == reference(text)


def test_long_words_cut_as_scikit_learn_cuts_them() -> None:
    text = "a " + "x" * 100 + " " + "ab" * 40
    for low, high in ((1, 1), (2, 5), (3, 3)):
        reference = TfidfVectorizer(analyzer="char_wb", ngram_range=(low, high)).build_analyzer()
        assert char_wb_analyzer((low, high), True)(text) == reference(text)


def test_stacked_weights_equal_scikit_learns_rows_and_survive_a_round_trip() -> None:
    texts = ["my card has not arrived", "refund my card please", "card card card arrived", "new pin"]
    fitted = [
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit(texts),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=False).fit(texts),
        TfidfVectorizer(analyzer="word", sublinear_tf=True, token_pattern=WORD).fit(texts),
    ]
    for chosen in (fitted[:1], fitted[:2], fitted, fitted[1:2]):
        stacked = StackedTfidf(tuple(TfidfFeatures.from_plain(features_of(v).to_plain()) for v in chosen))
        for text in [*texts, "an unseen card text", "pin", "zzz"]:
            expected = np.hstack([v.transform([text]).toarray()[0] for v in chosen])
            dense = np.zeros(stacked.size)
            found = stacked.transform(text)
            if found is not None:
                dense[found[0]] = found[1]
            assert np.allclose(dense, expected, rtol=0, atol=1e-12), (len(chosen), text)
    assert StackedTfidf(tuple(features_of(v) for v in fitted)).transform("§§§") is None


def test_settings_the_lean_path_cannot_reproduce_are_refused() -> None:
    fitted = TfidfVectorizer(stop_words=["the"]).fit(["the card", "a refund"])
    with pytest.raises(ValueError, match="stop_words"):
        features_of(fitted)
    with pytest.raises(ValueError, match="analyzer"):
        TfidfFeatures("char", (1, 2), True, WORD, False, {"a": 0}, np.ones(1))


CORPUS = ["abc XYZ éÜß", "ab ba cab", "12 ab-c, x!", "İstanbul iß", "a b c X Y Z", "ßab éé ÜÜ abc"]
FITTED = [
    TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=WORD).fit(CORPUS),
    TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True).fit(CORPUS),
]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(TEXTS | st.sampled_from(CORPUS), min_size=1, max_size=8))
def test_stacked_features_equal_scikit_learns_with_the_word_cache_warm_cold_and_full(
    texts: list[str],
) -> None:
    stacked = StackedTfidf(tuple(features_of(v) for v in FITTED))
    for part in stacked._parts:
        if hasattr(part, "WORD_CACHE"):
            part.WORD_CACHE = 3  # type: ignore[misc]  # small, so it fills and starts over
    for text in [*texts, *texts]:  # the second time round, from the cache
        expected = np.hstack([v.transform([text]).toarray()[0] for v in FITTED])
        dense = np.zeros(stacked.size)
        found = stacked.transform(text)
        if found is not None:
            dense[found[0]] = found[1]
        assert np.allclose(dense, expected, rtol=0, atol=1e-12), text
