"""Open-set calibration: near duplicates kept in one fold, labels held out in rotation, the
precision's interval, the promise of escalating unseen intents, and the signals that tell an
unseen intent apart (unseen terms, the nearest training row)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from tests.intents import INTENTS, make_rows, write_csv
from tiers.classifier.calibration import escalation_threshold, label_interval
from tiers.classifier.confidence import REASONS, SIGNALS, Reliability, Summary
from tiers.classifier.evaluation import wilson
from tiers.classifier.folds import calibration_folds, class_rounds, near_duplicate_groups
from tiers.classifier.model import OUT_OF_SCOPE, ClassifierModel, Predictor
from tiers.classifier.neighbours import Neighbours
from tiers.classifier.rows import DataError
from tiers.classifier.training import train


def test_near_duplicates_of_one_label_share_a_group() -> None:
    texts = [
        "how do I top up my card",
        "How do I top-up my card?",
        "how do i top up my card please",
        "what is the exchange rate",
        "how do I top up my card",  # the same words, another label: never joined
    ]
    labels = ["top_up", "top_up", "top_up", "rate", "other"]
    groups = near_duplicate_groups(texts, labels)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_folds_keep_a_group_together_and_hold_every_row_once() -> None:
    labels = ["a"] * 20 + ["b"] * 20
    groups = np.array([i // 2 for i in range(40)])  # pairs of twins
    splits = calibration_folds(labels, 5, seed=0, groups=groups)
    held = np.concatenate([h for _, h in splits])
    assert sorted(held.tolist()) == list(range(40))
    for fit, held_rows in splits:
        assert not {groups[i] for i in fit} & {groups[i] for i in held_rows}
    # too few groups of a label to stratify: still a partition that keeps the twins together
    few = calibration_folds(["a"] * 4 + ["b"] * 36, 5, seed=0, groups=groups)
    assert sorted(np.concatenate([h for _, h in few]).tolist()) == list(range(40))
    for fit, held_rows in few:
        assert not {groups[i] for i in fit} & {groups[i] for i in held_rows}


def test_class_rounds_hold_each_label_out_once_and_always_fit_the_out_of_scope_rows() -> None:
    labels = [f"l{k}" for k in range(9) for _ in range(3)] + [OUT_OF_SCOPE] * 4
    rounds = class_rounds(labels, 4, seed=1, keep=(OUT_OF_SCOPE,))
    assert len(rounds) == 4
    held_labels = [{labels[i] for i in held} for _, held in rounds]
    assert sorted(label for group in held_labels for label in group) == sorted({f"l{k}" for k in range(9)})
    for (fit, held), group in zip(rounds, held_labels, strict=True):
        assert {labels[i] for i in fit} == set(labels) - group  # every row of the other labels
        assert len(fit) + len(held) == len(labels)
        assert OUT_OF_SCOPE not in group
    assert class_rounds(["a", "b"], 4, seed=0) == []  # one label fitted is no model


def test_the_wilson_interval() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(95, 100)
    assert (low, high) == (pytest.approx(0.8882, abs=1e-4), pytest.approx(0.9785, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_escalation_threshold_keeps_the_promise_over_labels() -> None:
    # ten labels of 100 rows; label k's confidences are spread evenly over (k/20, k/20 + 0.5)
    labels = [f"l{k}" for k in range(10) for _ in range(100)]
    confidences = [k / 20 + j / 200 for k in range(10) for j in range(100)]
    summaries = [Summary(0, 0.9, 0.1, 0.3)] * 1000
    threshold = escalation_threshold(confidences, summaries, labels, 0.9)

    def shares(at: float) -> np.ndarray:
        return np.array([np.mean([c < at for c in confidences[k * 100 : (k + 1) * 100]]) for k in range(10)])

    low, _ = label_interval(shares(threshold))
    assert low >= 0.9 > label_interval(shares(threshold - 0.01))[0]  # the lowest that keeps it
    # counted over rows, 1000 rows would promise more than ten labels can
    assert wilson(float(shares(threshold).mean()) * 1000, 1000)[0] > low + 0.02
    # rows the out-of-scope class claims escalate whatever the threshold
    behind = [Summary(0, 0.1, 0.9, 0.3)] * 1000
    assert escalation_threshold(confidences, behind, labels, 0.9) == pytest.approx(0.0)


def test_the_nearest_row_is_the_cosine_of_the_closest_training_row_of_the_label() -> None:
    texts = ["my card has not arrived", "where is my card", "i want a refund", "refund please"]
    matrix = TfidfVectorizer().fit_transform(texts).tocsr()
    labels = np.array([0, 0, 1, 1])
    near = Neighbours.of_rows(matrix.indptr, matrix.indices, matrix.data, matrix.shape[1], labels, 2)
    query = TfidfVectorizer(vocabulary=None).fit(texts)
    vector = query.transform(["has my card arrived"]).tocsr()
    ids, weights = vector.indices, vector.data * 3.0  # any length: the text is normalised
    rows = matrix.toarray()
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    text = vector.toarray()[0] / np.linalg.norm(vector.toarray()[0])
    expected = [max(unit[i] @ text for i in (0, 1)), max(unit[i] @ text for i in (2, 3))]
    assert [near.similarity(k, ids, weights) for k in (0, 1)] == pytest.approx(expected, abs=1e-6)
    # training's way, many texts at once, agrees with serving's
    many = query.transform(["has my card arrived", "refund my money", "nothing known here"]).tocsr()
    assert near.nearest(many)[0] == pytest.approx(expected, abs=1e-6)
    for k in range(3):
        row = many[k]
        assert list(near.nearest(many)[k]) == pytest.approx(
            [near.similarity(label, row.indices, row.data) for label in (0, 1)], abs=1e-6
        )
    plain = Neighbours.from_plain(near.to_plain(), 2, matrix.shape[1], None)
    assert plain.similarity(0, ids, weights) == pytest.approx(expected[0], abs=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        Neighbours.from_plain(near.to_plain(), 3, matrix.shape[1], None)


def without(rows: list[tuple[str, str | None]], label: str) -> list[tuple[str, str | None]]:
    return [(t, lab) for t, lab in rows if lab != label]


@pytest.fixture(scope="module")
def open_model() -> ClassifierModel:
    return train(without(make_rows(), "exchange_rate"), target_precision=0.95)


def test_training_promises_precision_coverage_and_unseen_escalation(open_model: ClassifierModel) -> None:
    promise = open_model.metrics["out_of_fold"]["promise"]
    low, high = promise["interval"]
    assert low >= 0.95 and low <= promise["precision"] <= high + 1e-9  # calibrated to the lower bound
    assert promise["coverage"] == open_model.metrics["out_of_fold"]["coverage"] > 0.5
    # every held-out label's rows were scored as unseen, and the promise on them holds
    assert promise["unseen_rows"] == 3 * 40
    assert promise["unseen_interval"][0] >= 0.9 and promise["unseen_target"] == 0.9
    assert open_model.metrics["class_rounds"] == 3  # three labels: at most one round each


def test_an_intent_never_trained_on_escalates(open_model: ClassifierModel) -> None:
    predictor = Predictor(open_model)
    unseen = [t for t, lab in make_rows(seed=9) if lab == "exchange_rate"]
    escalated = sum(predictor.predict(t).escalate for t in unseen)
    assert escalated >= 0.9 * len(unseen)
    known = [(t, lab) for t, lab in make_rows(seed=9) if lab in ("refund", "lost_card")]
    answered = [(predictor.predict(t).label, lab) for t, lab in known]
    assert sum(label == lab for label, lab in answered) >= 0.5 * len(known)  # still answers what it knows
    assert all(label in (None, lab) for label, lab in answered)


def test_without_the_unseen_intent_promise_the_threshold_answers_more(open_model: ClassifierModel) -> None:
    closed = train(without(make_rows(), "exchange_rate"), target_precision=0.95, unseen_escalation=0.0)
    assert closed.metrics["out_of_fold"]["promise"]["unseen_target"] == 0.0
    assert closed.threshold < open_model.threshold  # here the promise on unseen intents binds
    assert closed.metrics["out_of_fold"]["coverage"] > open_model.metrics["out_of_fold"]["coverage"]


def test_without_class_rounds_nothing_is_promised_of_unseen_intents() -> None:
    model = train(without(make_rows(), "exchange_rate"), target_precision=0.95, class_rounds=0)
    promise = model.metrics["out_of_fold"]["promise"]
    assert promise["unseen_escalated"] is None and promise["unseen_target"] is None
    with pytest.raises(DataError, match="below 1"):
        train(make_rows(), unseen_escalation=1.0)


def test_an_older_model_file_loads_with_the_signals_it_was_calibrated_on(
    open_model: ClassifierModel, tmp_path
) -> None:
    path = tmp_path / "m.joblib"
    open_model.save(path)
    stored = joblib.load(path)
    reliability = stored["reliability"]
    older = {k: v for k, v in stored.items() if k != "neighbours"} | {
        "format": 5,
        "reliability": {k: v for k, v in reliability.items() if k != "typical"}
        | {"signals": reliability["signals"][:6], "weights": reliability["weights"][:6]},
    }
    joblib.dump(older, tmp_path / "format5.joblib")
    loaded = ClassifierModel.load(tmp_path / "format5.joblib")
    assert loaded.neighbours is None and len(loaded.reliability.weights) == 6
    prediction = Predictor(loaded).predict(INTENTS["refund"][0])
    assert 0.0 <= prediction.confidence <= 1.0


def test_an_escalation_says_which_kind_of_signal_pulled_the_confidence_down() -> None:
    # every signal weighs +1; a typical right answer: margin .8, ..., nearest row .9
    weights = (1.0,) * len(SIGNALS)
    typical = (0.8, 2.0, 0.9, 0.1, 0.4, 2.0, 0.0, 0.0, 0.9, 0.0, 0.5)
    reliability = Reliability(weights, (0.5, -2.0), 0.0, typical)
    usual = Summary(0, 0.9, 0.1, 0.4, 0.0, 0.0, 0.9)
    assert reliability.reason(usual, 6) is None or reliability.reason(usual, 6) == REASONS["log_words"]
    far = Summary(0, 0.9, 0.1, 0.4, 0.0, 0.0, 0.2)
    assert reliability.reason(far, 6) == "unlike any training example of the label"
    confused = Summary(1, 0.9, 0.1, 0.4, 0.0, 0.0, 0.9)
    assert reliability.reason(confused, 6) == "a label often confused with others"
    unseen = Summary(0, 0.9, 0.1, 0.4, 0.0, 0.0, 0.9)
    with_weights = Reliability((0,) * 6 + (-3.0, -3.0, 0, 0), (0.5, 0.5), 0.0, typical)
    assert with_weights.reason(dataclasses.replace(unseen, unseen_words=0.5), 6) == (
        "words and spellings never seen in training"
    )
    assert Reliability(weights, (0.5, -2.0), 0.0).reason(far, 6) is None  # an older model: no reasons


def test_the_classifier_tier_says_why_it_escalates(open_model: ClassifierModel) -> None:
    predictor = Predictor(open_model)
    whys = [predictor.predict(t).why for t, lab in make_rows(seed=9) if lab == "exchange_rate"]
    said = [why for why in whys if why is not None]
    assert said and set(said) <= set(REASONS.values())


def test_training_says_so_when_no_threshold_keeps_the_promises(tmp_path) -> None:
    # two labels whose texts are the same: nothing tells them apart, or an unseen one from them
    rows = [(f"where is my card {k}", "a" if k % 2 else "b") for k in range(60)]
    data = write_csv(tmp_path / "same.csv", rows)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "m.joblib"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "answers nothing" in done.stdout
