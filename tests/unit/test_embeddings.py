"""Static word-piece embeddings: the pieces equal the reference tokenizer's, the kernel's dense view
equals NumPy's and scikit-learn's, and model files check the embeddings they were trained on."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from tokenizers import Tokenizer

from tests.intents import MIXED_TEXTS, make_rows
from tiers.classifier import _lean, embeddings
from tiers.classifier.embeddings import EmbeddingsError, StaticEmbeddings
from tiers.classifier.model import ClassifierModel, DenseView, ModelError, Predictor
from tiers.classifier.rows import DataError
from tiers.classifier.training import _vectorizers, fit_linear, model_of, train


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    return Tokenizer.from_file(str(embeddings._package_dir() / embeddings._TOKENIZER))


@pytest.fixture(scope="module")
def model() -> ClassifierModel:
    return train(make_rows(), target_precision=0.95, embeddings=True)


@pytest.fixture(scope="module")
def linear(model: ClassifierModel) -> Any:
    """The model's lean path without a head, built once (loading and checking the embeddings
    takes far longer than a decision)."""
    return replace(model, head=None).lean()


@settings(max_examples=300, deadline=None)
@given(text=MIXED_TEXTS | st.sampled_from([t for t, _ in make_rows(seed=4)]))
def test_word_pieces_equal_the_reference_tokenizers(
    loaded: StaticEmbeddings, reference: Tokenizer, text: str
) -> None:
    # words are split on any whitespace; the reference sees them joined by single spaces
    words = text.split()
    expected = reference.encode(" ".join(words), add_special_tokens=False).ids if words else []
    assert loaded.pieces.text_ids(text) == expected


def test_a_text_embeds_as_the_unit_sum_of_its_pieces(loaded: StaticEmbeddings) -> None:
    vector = loaded.embed("where is my new card")
    ids = loaded.pieces.text_ids("where is my new card")
    expected = np.asarray(loaded.weights, dtype=np.float64)[ids].sum(axis=0)
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)
    assert not loaded.embed("   \n").any()  # no words: zeros, which add nothing
    assert loaded.dims == 256 and len(loaded.sha256) == 64


def test_the_kernel_reads_every_half_precision_value_as_numpy_does() -> None:
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves) & (halves != 0)]
    pieces = np.stack([finite, np.ones_like(finite)], axis=1)  # row i: (value i, 1)
    # one tf-idf row, then the dense view's two: its first dimension feeds class 0, its second none
    weights = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    kernel = _lean.Kernel(weights, np.zeros(2), np.ones(1), (True,), pieces.view(np.uint16), 2.0)
    out = np.empty(2)
    for row, value in enumerate(finite.astype(np.float64)):
        kernel.probabilities(([], [row]), out)
        # dense view (value, 1)/norm times 2.0; logits = (2 * value / norm, 0)
        logit = 2.0 * value / np.sqrt(value * value + 1.0)
        assert out[0] == pytest.approx(1.0 / (1.0 + np.exp(-logit)), rel=1e-12, abs=1e-300), value


def test_the_kernel_refuses_bad_pieces() -> None:
    weights = np.ones((3, 2), dtype=np.float32)
    pieces = np.ones((4, 2), dtype=np.float16).view(np.uint16)
    kernel = _lean.Kernel(weights, np.zeros(2), np.ones(1), (True,), pieces, 1.0)
    out = np.empty(2)
    with pytest.raises(ValueError, match="word piece id 4"):
        kernel.probabilities(([], [4]), out)
    # the nearest training row in embedding space: pieces (1, 1) make the unit (0.707, 0.707)
    units = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    assert kernel.nearest_embedding([0], units, 0, 2) == pytest.approx((0.6 + 0.8) / np.sqrt(2), abs=1e-6)
    assert kernel.nearest_embedding([], units, 0, 2) == 0.0
    with pytest.raises(ValueError, match="rows outside"):
        kernel.nearest_embedding([0], units, 0, 3)
    with pytest.raises(ValueError, match="word piece id 4"):
        kernel.nearest_embedding([4], units, 0, 2)
    with pytest.raises(ValueError, match="no word pieces"):
        _lean.Kernel(weights, np.zeros(2), np.ones(3), (True,)).nearest_embedding([0], units, 0, 2)
    with pytest.raises(ValueError, match="feature id 1"):
        kernel.probabilities(([1], [0]), out)  # rows 1 and 2 are the dense view's, not features
    with pytest.raises(TypeError, match="one of word piece ids"):
        kernel.probabilities(([0],), out)
    with pytest.raises(ValueError, match="do not fit"):
        _lean.Kernel(weights, np.zeros(2), np.ones(2), (True,), pieces, 1.0)
    with pytest.raises(ValueError, match="format 'H'"):
        _lean.Kernel(weights, np.zeros(2), np.ones(1), (True,), np.ones((4, 2), dtype=np.float16), 1.0)


@settings(max_examples=200, deadline=None)
@given(text=MIXED_TEXTS | st.sampled_from([t for t, _ in make_rows(seed=6)]))
def test_with_embeddings_the_kernel_equals_numpy(
    model: ClassifierModel, linear: Any, loaded: StaticEmbeddings, text: str
) -> None:
    lean = linear  # the linear part, exactly (the head: test_dense_head.py)
    assert lean.compiled
    assert np.allclose(lean.probabilities(text), lean.numpy_probabilities(text), rtol=0, atol=1e-12)
    # the nearest training row in embedding space: the kernel's and NumPy's
    summary = lean.decide(text, None)
    assert model.neighbours is not None and model.neighbours.units is not None
    expected = model.neighbours.embedding_similarity(summary.best, loaded.embed(text))
    assert summary.neighbour_embedding == pytest.approx(expected, abs=1e-5)


def test_with_embeddings_the_lean_path_gives_scikit_learns_probabilities(loaded: StaticEmbeddings) -> None:
    rows = make_rows()
    view = DenseView(loaded, 0.75)
    vectorizers, estimator = fit_linear(
        [t for t, _ in rows], [str(lab) for _, lab in rows], _vectorizers(), LogisticRegression(C=20), view
    )
    texts = [t for t, _ in make_rows(seed=9)] + ["", "zzz qqq", "Ünïcode  tabs\tand\nlines", "a" * 400]
    features = sparse.hstack(
        [v.transform(texts) for v in vectorizers]
        + [sparse.csr_matrix(np.array([view.features(t) for t in texts]))]
    ).tocsr()
    expected = estimator.predict_proba(features)
    lean = model_of(vectorizers, estimator, view).lean(loaded)
    for text, row in zip(texts, expected, strict=True):
        found = lean.probabilities(text)
        assert np.allclose(found, row, rtol=0, atol=1e-6), text  # single-precision coefficients
        assert found.argmax() == row.argmax(), text


def test_a_model_file_checks_its_embeddings(model: ClassifierModel, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    model.save(path)
    loaded = ClassifierModel.load(path)
    assert loaded.embeddings == model.embeddings
    assert Predictor(loaded).predict("my card has not arrived").best == "card_arrival"
    stored = joblib.load(path)
    joblib.dump(
        {**stored, "embeddings": {**stored["embeddings"], "sha256": "0" * 64}}, tmp_path / "other.joblib"
    )
    with pytest.raises(ModelError, match=r"other wordllama-l2-supercat-256 embeddings.*retrain"):
        ClassifierModel.load(tmp_path / "other.joblib")
    joblib.dump({**stored, "embeddings": None}, tmp_path / "dropped.joblib")
    with pytest.raises(ModelError, match="damaged"):  # its coefficients have 256 columns too many
        ClassifierModel.load(tmp_path / "dropped.joblib")


def test_without_the_package_the_error_says_what_to_install(
    model: ClassifierModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.joblib"
    model.save(path)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wordllama" else real(name, *a)
    )
    with pytest.raises(EmbeddingsError, match=r"tiergate\[embeddings\]"):
        StaticEmbeddings.load()
    with pytest.raises(ModelError, match=r"m.joblib: .*tiergate\[embeddings\]"):
        ClassifierModel.load(path)
    with pytest.raises(DataError, match=r"tiergate\[embeddings\]"):
        train(make_rows(), embeddings=True)


def test_unknown_embeddings_are_refused() -> None:
    with pytest.raises(EmbeddingsError, match="unknown embeddings"):
        StaticEmbeddings.load("glove-840b")


def test_the_word_cache_stays_bounded_and_right(loaded: StaticEmbeddings, reference: Tokenizer) -> None:
    pieces = embeddings.WordPieces.__new__(embeddings.WordPieces)
    pieces.__dict__.update(loaded.pieces.__dict__)  # the same tables, a cache of its own
    pieces._words = {}
    pieces.WORD_CACHE = 5
    words = [f"word{i}" for i in range(12)]
    for word in words * 2:
        assert list(pieces.ids(word)) == reference.encode(word, add_special_tokens=False).ids
        assert len(pieces._words) <= 5


def test_serving_embeddings_imports_neither_wordllama_nor_a_tokenizer_library(
    model: ClassifierModel, tmp_path: Path
) -> None:
    import subprocess
    import sys

    path = tmp_path / "m.joblib"
    model.save(path)
    probe = (
        "import sys; from tiers.classifier.model import ClassifierModel, Predictor; "
        f"p = Predictor(ClassifierModel.load({str(path)!r})); p.predict('where is my card'); "
        "heavy = ('sklearn', 'scipy', 'wordllama', 'tokenizers'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
