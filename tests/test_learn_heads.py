"""Heads: the scikit-learn estimator contract, known accuracies on synthetic data, class weights, search."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from pixelmine.errors import InputError
from pixelmine.learn.heads import HEADS, SEARCH_SPACES, KNNProbe, LinearSVMProbe, LogisticProbe, create_head
from pixelmine.learn.novelty import NoveltyScorer
from pixelmine.learn.search import search, stratified_subsample


def _expected_failures(estimator):
    if isinstance(estimator, KNNProbe):
        # sklearn's check weights class 0 by 10^7 and expects it predicted almost everywhere. kNN weighs votes
        # of the k neighbours only: a class absent from a neighbourhood cannot win there, whatever its weight.
        # A weight of 2 doubles one neighbour's vote; a second copy would also take a second neighbour's place.
        return {"check_class_weight_classifiers": "class weights re-weigh kNN votes, they cannot add votes",
                "check_sample_weight_equivalence_on_dense_data": "a weight re-weighs a vote, a copy takes a slot"}
    if isinstance(estimator, LinearSVMProbe):
        # the sigmoid calibration's internal folds put a repeated image in several folds, a weighted one in one
        return {"check_sample_weight_equivalence_on_dense_data": "calibration folds split copies, not weights"}
    return {}


@parametrize_with_checks([LogisticProbe(), LinearSVMProbe(), KNNProbe(n_neighbors=3)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def _blobs(n_per_class, k, dim, separation, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.zeros((k, dim))
    centres[np.arange(k), np.arange(k) % dim] = separation
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + rng.standard_normal((len(y), dim)), np.array([f"class{c}" for c in y])


@pytest.mark.parametrize("name", sorted(HEADS))
def test_separable_classes_are_learned_perfectly(name):
    X, y = _blobs(60, 4, 12, separation=10.0)
    Xt, yt = _blobs(40, 4, 12, separation=10.0, seed=1)
    head = create_head(name).fit(X, y)
    assert (head.predict(Xt) == yt).mean() == 1.0
    probs = head.predict_proba(Xt)
    assert probs.shape == (160, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert list(head.classes_) == ["class0", "class1", "class2", "class3"]


@pytest.mark.parametrize("name", ["logreg", "svm"])
def test_linear_heads_reach_the_bayes_accuracy_of_overlapping_classes(name):
    # Two unit-variance Gaussians whose means are d apart: the best possible accuracy is Phi(d / 2).
    d = 2.0
    rng = np.random.default_rng(3)
    n = 3000
    y = np.repeat([0, 1], n)
    X = np.c_[y * d + rng.standard_normal(2 * n), rng.standard_normal((2 * n, 3))]
    yt = np.repeat([0, 1], n)
    Xt = np.c_[yt * d + rng.standard_normal(2 * n), rng.standard_normal((2 * n, 3))]
    accuracy = (create_head(name).fit(X, y).predict(Xt) == yt).mean()
    assert accuracy == pytest.approx(norm.cdf(d / 2), abs=0.015)  # 0.841


def test_balanced_class_weight_rescues_a_rare_class():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(950), np.ones(50)]
    X = (y * 1.5)[:, None] + rng.standard_normal((1000, 1))
    recall = {}
    for weight in (None, "balanced"):
        predicted = LogisticProbe(class_weight=weight).fit(X, y).predict(X)
        recall[weight] = (predicted[y == 1] == 1).mean()
    assert recall["balanced"] > recall[None] + 0.3


def test_knn_probabilities_are_smoothed_votes():
    X = np.r_[np.zeros((10, 2)) + [1, 0], np.zeros((10, 2)) + [0, 1]] + 0.01 * np.arange(20)[:, None]
    y = np.repeat(["a", "b"], 10)
    head = KNNProbe(n_neighbors=5, smoothing=1.0).fit(X, y)
    probs = head.predict_proba([[1.0, 0.0]])
    # 5 unanimous votes plus 1 pseudo-vote spread over 2 classes: (5 + 0.5) / 6
    np.testing.assert_allclose(probs, [[5.5 / 6, 0.5 / 6]])


def test_svm_needs_two_examples_per_class():
    X = np.random.default_rng(0).standard_normal((5, 2))
    with pytest.raises(ValueError, match="at least 2 examples of every class; class 'b' has 1"):
        LinearSVMProbe().fit(X, ["a", "a", "a", "a", "b"])


def test_unknown_head_lists_the_choices():
    with pytest.raises(InputError, match="choose one of: logreg, svm, knn"):
        create_head("forest")


def test_search_tries_candidates_and_picks_the_best_on_val():
    X, y = _blobs(80, 3, 10, separation=2.0)
    Xv, yv = _blobs(40, 3, 10, separation=2.0, seed=1)
    result = search(LogisticProbe(), SEARCH_SPACES["logreg"], X, y, Xv, yv, budget_s=60)
    assert len(result.trials) == len(SEARCH_SPACES["logreg"])
    best = max(result.trials, key=lambda t: (t["val_balanced_accuracy"], -t["val_log_loss"]))
    assert result.best_params == best["params"]


def test_search_is_time_boxed_and_skips_without_val():
    X, y = _blobs(50, 2, 5, separation=3.0)
    result = search(LogisticProbe(), SEARCH_SPACES["logreg"], X, y, X[::5], y[::5], budget_s=0.0)
    assert len(result.trials) == 1  # the first candidate always runs
    note = result.cut_short_note()
    assert f"tried 1 of {len(SEARCH_SPACES['logreg'])} settings" in note and "--search-budget" in note
    complete = search(LogisticProbe(), SEARCH_SPACES["logreg"][:2], X, y, X[::5], y[::5], budget_s=60)
    assert complete.cut_short_note() is None
    skipped = search(LogisticProbe(), SEARCH_SPACES["logreg"], X, y, X[:0], y[:0], budget_s=10)
    assert skipped.best_params == {} and "val split has 0 images" in skipped.skipped


def test_stratified_subsample_keeps_every_class():
    y = np.r_[np.zeros(1000), np.ones(10), np.full(2, 2)]
    rows = stratified_subsample(y, 100, seed=0)
    assert set(y[rows]) == {0, 1, 2} and len(rows) <= 103


def test_novelty_separates_far_images_from_training_like_ones():
    X, _ = _blobs(100, 3, 20, separation=5.0)
    scorer = NoveltyScorer(n_components=8).fit(X)
    near, _ = _blobs(20, 3, 20, separation=5.0, seed=7)
    far = np.random.default_rng(1).standard_normal((20, 20)) * 5 - 40
    assert np.median(scorer.novelty(near)) < 1.0
    assert (scorer.novelty(far) > 1.0).all()
    assert clone(scorer).get_params()["n_components"] == 8


def test_out_of_fold_probabilities_do_not_depend_on_parallel_folds():
    from pixelmine.learn.oof import out_of_fold_probabilities

    X, y = _blobs(40, 3, 8, separation=1.5)
    y[:2] = "rare"  # too rare for the SVM's calibration in some folds: the fallback runs in a worker too
    calls = []
    serial = out_of_fold_probabilities(LinearSVMProbe(), X, y, n_splits=3, n_jobs=1)
    parallel = out_of_fold_probabilities(LinearSVMProbe(), X, y, n_splits=3, n_jobs=2,
                                         progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])
    assert serial[2] == parallel[2] and any("used logistic regression" in note for note in serial[2])
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(set(serial[1].tolist())) == [0, 1, 2]
    np.testing.assert_allclose(serial[0].sum(axis=1), 1.0)
