"""Evaluation: every metric equals scikit-learn's on the same predictions; bootstrap, calibration, mistakes."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from pixelmine.errors import InputError
from pixelmine.learn.metrics import (
    _scores_from_confusion,
    bootstrap_intervals,
    evaluate,
    expected_calibration_error,
)

CLASSES = ["cat", "dog", "fox", "owl"]


def _random_predictions(n=400, k=4, skill=1.5, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k))
    logits[np.arange(n), truth] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return truth, probs


def test_metrics_match_sklearn_on_the_same_predictions():
    truth, probs = _random_predictions()
    labels = [CLASSES[t] for t in truth]
    result = evaluate(labels, probs, CLASSES, n_bootstrap=0)
    predicted = probs.argmax(axis=1)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, predicted))
    for avg in ("macro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(skm.f1_score(truth, predicted, average=avg))
        assert m[f"{avg}_precision"] == pytest.approx(skm.precision_score(truth, predicted, average=avg))
        assert m[f"{avg}_recall"] == pytest.approx(skm.recall_score(truth, predicted, average=avg))
    assert m["log_loss"] == pytest.approx(skm.log_loss(truth, probs))
    assert m["top_k"]["2"] == pytest.approx(skm.top_k_accuracy_score(truth, probs, k=2))
    assert m["top_k"]["3"] == pytest.approx(skm.top_k_accuracy_score(truth, probs, k=3))
    p, r, f, s = skm.precision_recall_fscore_support(truth, predicted)
    for i, row in enumerate(result.per_class):
        assert row["class"] == CLASSES[i]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert result.confusion == skm.confusion_matrix(truth, predicted).tolist()
    assert result.n == 400 and "accuracy" in result.table()


def test_bootstrap_scores_equal_sklearn_on_each_resample():
    truth, probs = _random_predictions(n=60, skill=0.5, seed=2)
    predicted = probs.argmax(axis=1)
    rng = np.random.default_rng(5)
    for _ in range(20):
        rows = rng.integers(0, 60, 60)
        cm = skm.confusion_matrix(truth[rows], predicted[rows], labels=range(4))[None]
        accuracy, balanced, macro_f1 = (v[0] for v in _scores_from_confusion(cm))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" on some resamples
            expected_balanced = skm.balanced_accuracy_score(truth[rows], predicted[rows])
        assert accuracy == pytest.approx(skm.accuracy_score(truth[rows], predicted[rows]))
        assert balanced == pytest.approx(expected_balanced)
        assert macro_f1 == pytest.approx(skm.f1_score(truth[rows], predicted[rows], average="macro", zero_division=0))


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_images():
    widths = []
    for n in (100, 2000):
        truth, probs = _random_predictions(n=n, seed=1)
        result = evaluate([CLASSES[t] for t in truth], probs, CLASSES, n_bootstrap=500)
        low, high = result.intervals["accuracy"]
        assert low <= result.metrics["accuracy"] <= high
        widths.append(high - low)
    # the width of a proportion's interval scales like 1 / sqrt(n): 20x the images, ~4.5x narrower
    assert widths[1] < widths[0] / 3


def test_bootstrap_is_seeded():
    truth, probs = _random_predictions(n=80)
    predicted = probs.argmax(axis=1)
    a = bootstrap_intervals(truth, predicted, 4, n_bootstrap=200, seed=3)
    b = bootstrap_intervals(truth, predicted, 4, n_bootstrap=200, seed=3)
    assert a == b and set(a) == {"accuracy", "balanced_accuracy", "macro_f1"}


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0])
    # bin [0.933, 1.0]: 4 images, accuracy 0.75 vs confidence 0.95; bin [0.533, 0.6]: accuracy 0.5 vs 0.55
    ece, bins = expected_calibration_error(confidence, correct, n_bins=15)
    assert ece == pytest.approx(4 / 6 * 0.20 + 2 / 6 * 0.05)
    assert sum(b["count"] for b in bins) == 6


def test_calibrated_predictions_have_small_ece_and_overconfident_large():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20_000)
    calibrated = rng.uniform(size=confidence.size) < confidence
    overconfident = rng.uniform(size=confidence.size) < confidence - 0.3
    assert expected_calibration_error(confidence, calibrated)[0] < 0.02
    assert expected_calibration_error(confidence, overconfident)[0] == pytest.approx(0.3, abs=0.03)


def test_most_confident_mistakes_come_first():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.99, 0.01]])
    result = evaluate(["b", "b", "b", "a"], probs, ["a", "b"], ids=["i0", "i1", "i2", "i3"], n_bootstrap=0)
    assert [m["id"] for m in result.mistakes] == ["i0", "i1"]
    assert result.mistakes[0] == {"id": "i0", "true": "b", "predicted": "a", "probability": 0.9,
                                  "probability_of_true": pytest.approx(0.1)}


def test_labels_the_model_does_not_know_are_named():
    with pytest.raises(InputError, match=r"classes the model was not trained on: 'zebra'.*knows 'cat', 'dog'"):
        evaluate(["cat", "zebra"], np.array([[0.5, 0.5], [0.5, 0.5]]), ["cat", "dog"])


def test_shape_and_empty_input_are_explained():
    with pytest.raises(InputError, match=r"shape \(n_images, n_classes\) = \(2, 2\)"):
        evaluate(["cat", "dog"], np.ones((2, 3)) / 3, ["cat", "dog"])
    with pytest.raises(InputError, match="no labelled images to evaluate"):
        evaluate([], np.zeros((0, 2)), ["cat", "dog"])
