"""Splits: stratified fractions, seeded, and no duplicate ever straddles train / val / test."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelmine.errors import InputError
from pixelmine.learn.config import SplitConfig
from pixelmine.learn.data import LabelledSet, compute_splits
from pixelmine.learn.splits import (
    assign_splits,
    groups_from_pairs,
    near_duplicate_groups,
    near_duplicate_pairs,
    normalise_split_values,
    straddling_groups,
)


def _ids(n):
    return [f"{i:064x}" for i in range(n)]


def test_fractions_are_met_per_class():
    labels = ["a"] * 700 + ["b"] * 200 + ["c"] * 100
    splits = assign_splits(_ids(1000), labels, fractions=(0.7, 0.15, 0.15), seed=0)
    for label, n in (("a", 700), ("b", 200), ("c", 100)):
        mine = splits[np.asarray(labels) == label]
        for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert (mine == name).sum() == pytest.approx(n * share, abs=1.01)


def test_same_seed_same_split_other_seed_other_split():
    labels = ["a"] * 50 + ["b"] * 50
    first = assign_splits(_ids(100), labels, seed=0)
    assert (first == assign_splits(_ids(100), labels, seed=0)).all()
    assert (first != assign_splits(_ids(100), labels, seed=1)).any()


def test_tiny_classes_are_both_learned_and_tested():
    splits = assign_splits(_ids(5), ["a", "a", "b", "b", "b"], seed=0)
    assert sorted(splits[:2]) == ["test", "train"]
    assert sorted(splits[2:]) == ["test", "train", "val"]


def test_near_duplicate_pairs_are_exact_even_through_the_pca_filter():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 256)).astype(np.float32)
    copies = base[:40] + 0.05 * rng.standard_normal((40, 256)).astype(np.float32)  # near-duplicates
    vectors = np.r_[base, copies]
    found = near_duplicate_pairs(vectors, 0.95, project_dim=16, block=97)
    # brute force on the same centred, normalised vectors
    x = vectors - vectors.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    expected = {(i, j) for i, j in itertools.combinations(range(len(x)), 2) if cos[i, j] >= 0.95}
    assert {tuple(p) for p in found.tolist()} == expected
    assert {(i, 300 + i) for i in range(40)} <= expected


def test_near_duplicates_never_straddle_splits():
    rng = np.random.default_rng(1)
    n = 400
    labels = np.asarray(["a", "b"])[rng.integers(0, 2, n)]
    vectors = rng.standard_normal((n, 32)).astype(np.float32)
    # plant 60 near-copies (and a chain: copy of a copy) of random originals
    originals = rng.choice(n, 60, replace=False)
    copies = vectors[originals] + 0.02 * rng.standard_normal((60, 32)).astype(np.float32)
    chain = copies[:10] + 0.02 * rng.standard_normal((10, 32)).astype(np.float32)
    all_vectors = np.r_[vectors, copies, chain]
    all_labels = np.r_[labels, labels[originals], labels[originals[:10]]]
    data = LabelledSet(ids=_ids(len(all_labels)), labels=all_labels, paths=[""] * len(all_labels),
                       metadata=[{}] * len(all_labels))
    result = compute_splits(data, SplitConfig(seed=3), all_vectors)
    assert result.straddling_groups == 0
    for k, original in enumerate(originals):
        assert result.splits[original] == result.splits[n + k]
    for k in range(10):
        assert result.splits[n + 60 + k] == result.splits[originals[k]]
    assert result.grouped_images == 130
    # without grouping, some copies would have landed in another split than their original
    ungrouped = assign_splits(data.ids, all_labels, seed=3)
    assert any(ungrouped[o] != ungrouped[n + k] for k, o in enumerate(originals))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from("abc")), min_size=1, max_size=120),
       st.integers(0, 10))
def test_groups_stay_whole_for_any_grouping(items, seed):
    groups = np.asarray([g for g, _ in items])
    labels = [lab for _, lab in items]
    splits = assign_splits(_ids(len(items)), labels, groups, seed=seed)
    assert straddling_groups(groups, splits) == 0
    assert set(splits) <= {"train", "val", "test"}


def test_groups_from_pairs_are_connected_components():
    groups = groups_from_pairs(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert groups[0] == groups[1] == groups[2] and groups[4] == groups[5]
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_user_split_values_are_normalised_or_explained():
    ids = _ids(4)
    assert normalise_split_values(["Train", "validation", "TEST", "dev"], ids, "split").tolist() == \
        ["train", "val", "test", "val"]
    with pytest.raises(InputError, match=r"split column 'fold' holds values other than train/val/test: 'holdout'"):
        normalise_split_values(["train", "holdout", "test", "val"], ids, "fold")
    with pytest.raises(InputError, match=r"1 labelled images have no value in the split column 'fold'"):
        normalise_split_values(["train", None, "test", "val"], ids, "fold")


def test_user_split_column_must_train_every_class():
    data = LabelledSet(ids=_ids(4), labels=np.asarray(["a", "a", "b", "b"]), paths=[""] * 4,
                       metadata=[{"s": "train"}, {"s": "test"}, {"s": "test"}, {"s": "val"}])
    with pytest.raises(InputError, match=r"puts no image of class 'b' in train"):
        compute_splits(data, SplitConfig(column="s"))


def test_split_config_is_checked():
    with pytest.raises(InputError, match="must sum to 1"):
        SplitConfig(train=0.8, val=0.15, test=0.15).check()
    with pytest.raises(InputError, match="train and test fractions must be above 0"):
        SplitConfig(train=0.85, val=0.15, test=0.0).check()


def test_features_that_cannot_tell_images_apart_do_not_make_one_giant_group():
    # 200 images whose features differ only slightly (a weak backbone, or a very uniform data set): at 0.98
    # almost every pair is "similar", but near-duplicate groups must stay small, so the threshold tightens.
    rng = np.random.default_rng(0)
    vectors = np.ones((200, 16)) + 0.05 * rng.standard_normal((200, 16))
    vectors[:, 0] += np.linspace(0, 0.01, 200)
    groups, _, notes = near_duplicate_groups(vectors, 0.5, max_group=20)
    assert np.bincount(groups).max() <= 20 and notes
    # real near-duplicates survive the tightening
    copies = np.r_[vectors, vectors[:5] + 1e-5 * rng.standard_normal((5, 16))]
    groups, _, _ = near_duplicate_groups(copies, 0.5, max_group=20)
    assert all(groups[k] == groups[200 + k] for k in range(5))
