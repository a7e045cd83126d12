"""The classifier tier: training, the lean path's probabilities, calibration, and model files."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from scipy import sparse
from sklearn.preprocessing import normalize

from tests.intents import make_rows, noisy_rows, write_csv, write_jsonl
from tiers.classifier.calibration import fit_reliability
from tiers.classifier.confidence import Summary
from tiers.classifier.evaluation import calibrate_threshold, evaluate
from tiers.classifier.folds import calibration_folds
from tiers.classifier.model import OUT_OF_SCOPE, ClassifierModel, ModelError, Predictor
from tiers.classifier.rows import DataError, load_rows
from tiers.classifier.training import (
    DEFAULT_CLASS_ROUNDS,
    DEFAULT_FOLDS,
    _fit,
    model_of,
    sklearn_vectorizer,
    train,
)


@pytest.fixture(scope="module")
def model() -> ClassifierModel:
    return train(make_rows(), target_precision=0.95)


def assert_lean_equals_reference(rows: list[tuple[str, str | None]], texts: list[str]) -> None:
    vectorizers, estimator = _fit([t for t, _ in rows], [str(lab) for _, lab in rows], 20.0, None)
    expected = estimator.predict_proba(sparse.hstack([v.transform(texts) for v in vectorizers]).tocsr())
    lean = model_of(vectorizers, estimator).lean()
    for text, row in zip(texts, np.asarray(expected), strict=True):
        found = lean.probabilities(text)
        # single-precision coefficients: within 1e-6 of the double-precision fit
        assert np.allclose(found, row, rtol=0, atol=1e-6), text
        assert found.argmax() == row.argmax(), text


def test_the_lean_path_gives_the_fitted_models_probabilities() -> None:
    texts = [t for t, _ in make_rows(seed=9)] + [
        "",
        "zzz qqq",
        "CARD!!! refund??",
        "a" * 500,
        "Ünïcode  tabs\tand\nlines",
    ]
    assert_lean_equals_reference(make_rows(), texts)


def test_the_lean_path_matches_for_two_classes() -> None:
    rows = [(t, lab) for t, lab in make_rows() if lab in ("refund", "lost_card")]
    assert_lean_equals_reference(rows, [t for t, _ in rows[:30]] + ["nothing in common"])


def test_serving_a_model_does_not_import_scikit_learn(model: ClassifierModel, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    model.save(path)
    probe = (
        "import sys; from tiers.classifier.model import ClassifierModel, Predictor; "
        f"p = Predictor(ClassifierModel.load({str(path)!r})); p.predict('where is my card'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_in_scope_questions_are_answered_and_chatter_escalates(model: ClassifierModel) -> None:
    predictor = Predictor(model)
    assert predictor.predict("hello, my card has not arrived yet?").label == "card_arrival"
    assert predictor.predict("please block my missing card").label == "lost_card"
    chatter = predictor.predict("tell me a joke about cats")
    assert chatter.escalate and chatter.label is None
    assert OUT_OF_SCOPE in model.classes


def test_a_min_confidence_override_escalates_more(model: ClassifierModel) -> None:
    assert Predictor(model, min_confidence=1.0).predict("i want a refund").escalate


def test_calibration_picks_the_largest_set_that_reaches_the_target() -> None:
    confidences = [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    correct = [True, True, True, False, True, False]
    point = {"level": None}  # the point estimate of the precision, not its interval
    assert calibrate_threshold(confidences, correct, 1.0, **point) == 0.9
    assert calibrate_threshold(confidences, correct, 0.8, **point) == 0.7
    assert calibrate_threshold([0.5], [False], 0.9, **point) == 1.0
    # with the interval's lower bound, three right answers of three promise only 0.44 at 95 %
    assert calibrate_threshold(confidences, correct, 0.8) == 1.0
    assert calibrate_threshold(confidences, correct, 0.4) == 0.9
    many = [1.0 - k / 1000 for k in range(1000)]
    right = [k % 50 != 0 for k in range(1000)]  # 98 % right everywhere
    assert calibrate_threshold(many, right, 0.975, level=None) == many[-1]
    assert calibrate_threshold(many, right, 0.965) == many[-1]  # 0.969-0.987 at 1000 rows
    assert calibrate_threshold(many, right, 0.975) == 1.0


def test_calibration_folds_hold_every_row_out_exactly_once() -> None:
    labels = ["a"] * 12 + ["b"] * 9 + [OUT_OF_SCOPE] * 6
    splits = calibration_folds(labels, 5, seed=0)
    assert len(splits) == 5
    held = np.concatenate([h for _, h in splits])
    assert sorted(held.tolist()) == list(range(len(labels)))
    for fit, held_rows in splits:
        assert not set(fit) & set(held_rows) and len(fit) + len(held_rows) == len(labels)
        assert {labels[i] for i in held_rows} == {"a", "b", OUT_OF_SCOPE}  # stratified
    # a label with fewer rows than folds: plain folds, still a partition
    sparse_labels = ["a"] * 10 + ["b"] * 2
    held = np.concatenate([h for _, h in calibration_folds(sparse_labels, 5, seed=0)])
    assert sorted(held.tolist()) == list(range(12))


def test_training_reports_out_of_fold_figures_over_every_row(model: ClassifierModel) -> None:
    rows = make_rows()
    metrics = model.metrics["out_of_fold"]
    assert model.metrics["folds"] == DEFAULT_FOLDS and metrics["rows"] == len(rows)
    assert metrics["threshold"] == model.threshold
    assert metrics["accuracy_answered"] >= 0.95  # the target the fixture calibrates for
    with pytest.raises(DataError, match="at least 2 folds"):
        train(rows, folds=1)


def test_evaluation_reports_accuracy_coverage_escalation_and_the_curve(model: ClassifierModel) -> None:
    report = evaluate(model, make_rows(seed=5))
    assert report["top1_accuracy"] > 0.9
    assert 0 < report["coverage"] <= 1 and report["accuracy_answered"] >= 0.9
    assert report["out_of_scope_escalated"] > 0.8
    assert [p["threshold"] for p in report["curve"]] == sorted(p["threshold"] for p in report["curve"])


def test_a_model_round_trips_and_stale_files_fail_clearly(model: ClassifierModel, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    model.save(path)
    loaded = ClassifierModel.load(path)
    assert loaded.threshold == model.threshold and loaded.classes == model.classes
    assert len(loaded.data_sha256) == 64
    stored = joblib.load(path)
    stored["sklearn_version"] = "0.0.1"
    joblib.dump(stored, tmp_path / "old.joblib")
    with pytest.raises(ModelError, match="retrain"):
        ClassifierModel.load(tmp_path / "old.joblib")
    stored["sklearn_version"] = model.sklearn_version
    joblib.dump({**stored, "format": 1}, tmp_path / "format1.joblib")
    with pytest.raises(ModelError, match=r"model format 1.*retrain"):
        ClassifierModel.load(tmp_path / "format1.joblib")
    joblib.dump({**stored, "coef": stored["coef"][:, :-1]}, tmp_path / "damaged.joblib")
    with pytest.raises(ModelError, match="damaged"):
        ClassifierModel.load(tmp_path / "damaged.joblib")
    newer = ("reliability", "head", "neighbours")
    older = {k: v for k, v in stored.items() if k not in newer}
    joblib.dump({**older, "format": 3}, tmp_path / "format3.joblib")  # no confidence model
    assert ClassifierModel.load(tmp_path / "format3.joblib").reliability is None
    joblib.dump({"something": "else"}, tmp_path / "other.joblib")
    with pytest.raises(ModelError, match="not a tiergate classifier"):
        ClassifierModel.load(tmp_path / "other.joblib")
    with pytest.raises(ModelError, match="no such model"):
        ClassifierModel.load(tmp_path / "missing.joblib")


def test_csv_and_jsonl_rows_load_with_empty_or_null_labels_out_of_scope(tmp_path: Path) -> None:
    rows = make_rows(n_per_intent=2, out_of_scope=2)
    assert load_rows(write_csv(tmp_path / "d.csv", rows)) == rows
    assert load_rows(write_jsonl(tmp_path / "d.jsonl", rows)) == rows


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True)


def test_train_predict_and_eval_from_the_command_line(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "train.csv", make_rows())
    test_rows = make_rows(n_per_intent=5, seed=3, out_of_scope=5)
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    out = tmp_path / "model.joblib"
    trained = run_cli("train", "--data", str(data), "--out", str(out), "--target-precision", "0.95")
    assert trained.returncode == 0, trained.stderr
    assert "threshold" in trained.stderr  # progress lines
    assert trained.stderr.count("fold scored") == DEFAULT_FOLDS
    assert trained.stderr.count("class round scored") == min(
        DEFAULT_CLASS_ROUNDS, 4
    )  # a label a round at most
    assert "unseen intents escalated" in trained.stdout
    assert "confidence: confidence model" in trained.stdout
    predicted = run_cli("predict", "--model", str(out), "--data", str(test))
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(lines) == len(test_rows)
    assert all(set(line) == {"label", "confidence", "escalate"} for line in lines)
    agree = sum(line["label"] == label for line, (_, label) in zip(lines, test_rows, strict=True) if label)
    assert agree >= 0.8 * sum(1 for _, label in test_rows if label)
    report = json.loads(run_cli("eval", "--model", str(out), "--data", str(test), "--json").stdout)
    assert report["confidence"] == "reliability"
    assert {"top1_accuracy", "coverage", "accuracy_answered", "out_of_scope_escalated", "curve"} <= set(
        report
    )
    text = run_cli("eval", "--model", str(out), "--data", str(test)).stdout
    assert "coverage at threshold" in text
    missing = run_cli("eval", "--model", str(tmp_path / "nope.joblib"), "--data", str(test))
    assert missing.returncode == 1 and "no such model" in missing.stderr
    # texts alone are enough to predict, not to evaluate
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nwhere is my new card\nwhat is the weather like\n")
    alone = run_cli("predict", "--model", str(out), "--data", str(texts))
    assert alone.returncode == 0, alone.stderr
    assert [json.loads(line)["label"] for line in alone.stdout.splitlines()] == ["card_arrival", None]
    unlabelled = run_cli("eval", "--model", str(out), "--data", str(texts))
    assert unlabelled.returncode == 1 and "needs columns `text` and `label`" in unlabelled.stderr


def test_confidence_is_the_margin_over_the_runner_up_and_out_of_scope_first_escalates() -> None:
    # a model without a confidence model (as formats 2 and 3 are)
    model = dataclasses.replace(train(make_rows(), target_precision=0.95), reliability=None)
    predictor = Predictor(model, min_confidence=0.0)
    oos = model.classes.index(OUT_OF_SCOPE)
    for text in ("hello, my card has not arrived yet?", "i want a refund", "tell me a joke about cats"):
        probs = model.lean().probabilities(text)
        in_scope = [(p, c) for c, p in zip(model.classes, probs, strict=True) if c != OUT_OF_SCOPE]
        top, label = max(in_scope)
        runner_up = max(p for p, c in zip(probs, model.classes, strict=True) if c != label)
        prediction = predictor.predict(text)
        assert prediction.best == label
        assert abs(prediction.confidence - (top - runner_up)) < 1e-12
        assert prediction.escalate == (probs[oos] >= top), text


def test_training_with_embeddings_from_the_command_line(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "train.csv", make_rows())
    out = tmp_path / "model.joblib"
    trained = run_cli("train", "--data", str(data), "--out", str(out), "--embeddings")
    assert trained.returncode == 0, trained.stderr
    model = ClassifierModel.load(out)
    assert model.embeddings is not None and model.embeddings["dims"] == 256
    test = write_jsonl(tmp_path / "test.jsonl", make_rows(n_per_intent=5, seed=3))
    report = json.loads(run_cli("eval", "--model", str(out), "--data", str(test), "--json").stdout)
    assert report["top1_accuracy"] >= 0.8


@pytest.fixture(scope="module")
def noisy_model() -> ClassifierModel:
    return train(noisy_rows(), target_precision=0.95)


def test_the_confidence_is_the_reliability_models_probability_that_the_label_is_right(
    noisy_model: ClassifierModel,
) -> None:
    reliability = noisy_model.reliability
    assert reliability is not None and noisy_model.metrics["out_of_fold"]["confidence"] == "reliability"
    assert evaluate(noisy_model, noisy_rows()[:40])["confidence"] == "reliability"
    predictor = Predictor(noisy_model, min_confidence=0.0)
    oos = noisy_model.classes.index(OUT_OF_SCOPE)
    vectorizers = [sklearn_vectorizer(part) for part in noisy_model.features]
    training = [(t, OUT_OF_SCOPE if lab is None else lab) for t, lab in noisy_rows()]
    rows = normalize(sparse.hstack([v.transform([t for t, _ in training]) for v in vectorizers]).tocsr())
    for text in (
        "hello, my card has not arrived yet?",
        "card issue again",
        "i want a refund thanks",
        "zzz qqq card",
    ):
        probs = noisy_model.lean().probabilities(text)
        best = max((k for k in range(len(probs)) if k != oos), key=lambda k: probs[k])
        top, runner_up = probs[best], np.delete(probs, best).max()
        entropy = -(probs * np.log(probs)).sum()
        words = vectorizers[0].build_analyzer()(text)
        chars = vectorizers[1].build_analyzer()(text)
        vector = normalize(sparse.hstack([v.transform([text]) for v in vectorizers]).tocsr())
        of_best = [k for k, (_, lab) in enumerate(training) if lab == noisy_model.classes[best]]
        features = [
            top - runner_up,
            np.log(top / runner_up),
            top,
            runner_up,
            entropy,
            np.log1p(len(text.split())),
            sum(w not in vectorizers[0].vocabulary_ for w in words) / len(words),
            sum(c not in vectorizers[1].vocabulary_ for c in chars) / len(chars),
            (rows[of_best] @ vector.T).toarray().max(),
            0.0,  # no embeddings
        ]
        z = reliability.intercept + reliability.label_bias[best] + np.dot(reliability.weights, features)
        prediction = predictor.predict(text)
        assert prediction.best == noisy_model.classes[best]
        assert prediction.confidence == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
    # vague texts are less sure than clear ones
    clear = predictor.predict("what exchange rate do you use").confidence
    assert predictor.predict("card issue again").confidence < clear


def test_a_confidence_model_round_trips_and_a_foreign_one_is_refused(
    noisy_model: ClassifierModel, tmp_path: Path
) -> None:
    path = tmp_path / "m.joblib"
    noisy_model.save(path)
    loaded = ClassifierModel.load(path)
    assert loaded.reliability == noisy_model.reliability
    texts = [t for t, _ in make_rows(seed=8)[:40]]
    assert [Predictor(loaded).predict(t) for t in texts] == [Predictor(noisy_model).predict(t) for t in texts]
    stored = joblib.load(path)
    stored["reliability"] = {**stored["reliability"], "signals": ["margin"]}
    joblib.dump(stored, tmp_path / "foreign.joblib")
    with pytest.raises(ModelError, match=r"damaged.*signals"):
        ClassifierModel.load(tmp_path / "foreign.joblib")


def test_the_confidence_model_learns_which_labels_are_reliable() -> None:
    # the same probability shapes; label 0 is always right, label 1 half the time
    rng = random.Random(0)
    summaries, correct = [], []
    for _ in range(400):
        top = rng.uniform(0.5, 1.0)
        label = rng.randrange(2)
        summaries.append(Summary(label, top, 1.0 - top, 0.5))
        correct.append(label == 0 or rng.random() < 0.5)
    reliability = fit_reliability(summaries, [5] * len(summaries), correct, classes=3)
    assert reliability is not None and len(reliability.label_bias) == 3
    assert reliability.label_bias[0] > reliability.label_bias[1] + 1.0
    sure = Summary(0, 0.8, 0.2, 0.5)
    assert reliability.probability(sure, 5) > reliability.probability(Summary(1, 0.8, 0.2, 0.5), 5)
    assert fit_reliability(summaries, [5] * len(summaries), [True] * len(summaries), classes=3) is None
