"""The discovery finders as pure functions, on synthetic features with planted truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelmine.discover import classes, duplicates, label_issues, outliers
from pixelmine.discover.neighbors import nearest_neighbours, normalise
from pixelmine.errors import InputError


def _ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def _clusters(n: int = 300, dim: int = 24, k: int = 3, separation: float = 5.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{j}" for j in range(k)])[np.arange(n) % k]
    centres = rng.standard_normal((k, dim)) * separation
    x = centres[np.arange(n) % k] + rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


# -- grouping ----------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1]),
                         max_size=60), st.permutations(list(range(n))))))
def test_groups_never_chain_and_every_member_is_a_copy_of_its_keeper(case):
    n, pairs, preference = case
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    groups = duplicates.star_groups(n, a, b, np.array(preference))
    linked = {frozenset(p) for p in pairs}
    seen = set()
    rank = {row: k for k, row in enumerate(preference)}
    for keeper, members in groups:
        assert keeper in members and len(members) >= 2
        assert not seen & set(members)  # each image in one group at most
        seen |= set(members)
        assert all(frozenset((keeper, m)) in linked for m in members if m != keeper)  # no copy of a copy
        assert all(rank[keeper] < rank[m] for m in members if m != keeper)  # the best image of the group keeps
    assert all(x in seen or y in seen for x, y in pairs)  # no link left with both images ungrouped


def test_a_chain_of_look_alikes_is_not_one_group():
    # 0-1-2-3-4-5: each image like the next, none like the one after; union-find would make one group of 6
    a, b = np.arange(5), np.arange(1, 6)
    groups = duplicates.star_groups(6, a, b, np.arange(6))
    assert [sorted(m) for _, m in groups] == [[0, 1], [2, 3], [4, 5]]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 6))
def test_near_duplicate_groups_are_symmetric_and_transitive(seed, planted):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    for j in range(planted):  # chains of copies: j -> 30 + j -> 45 + j
        x[30 + j] = x[j] + 0.01 * rng.standard_normal(8)
        x[45 + j] = x[30 + j] + 0.01 * rng.standard_normal(8)
    z = normalise(x)
    found = duplicates.find_near_duplicates(_ids(60), neighbours=nearest_neighbours(z, 5, normalised=True),
                                            normalised=z, cosine=0.97)
    members = {f.image_id: set(f.details["members"]) for f in found}
    for image_id, group in members.items():
        assert image_id in group
        for other in group:
            assert members[other] == group  # b is in a's group <=> a is in b's; the same group everywhere
    for j in range(planted):
        ids = _ids(60)
        assert {ids[j], ids[30 + j], ids[45 + j]} <= members.get(ids[j], set())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=40), st.integers(0, 12), st.integers(0, 10**6))
def test_phash_pairs_match_brute_force(values, bits, seed):
    rng = np.random.default_rng(seed)
    values = list(values)
    for _ in range(5):  # plant close codes by flipping a few bits
        flipped = values[int(rng.integers(len(values)))]
        for b in rng.choice(64, size=int(rng.integers(0, 10)), replace=False):
            flipped ^= 1 << int(b)
        values.append(flipped)
    codes, valid = duplicates.phash_codes([f"{v:016x}" for v in values])
    got = {tuple(p) for p in duplicates.phash_pairs(codes, valid, bits).tolist()}
    want = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
            if bin(values[i] ^ values[j]).count("1") <= bits}
    assert got == want


def test_phash_codes_reject_missing_and_malformed():
    codes, valid = duplicates.phash_codes(["00000000000000ff", None, "xyz", "zzzzzzzzzzzzzzzz"])
    assert valid.tolist() == [True, False, False, False]
    assert int(codes[0]) == 255


# -- near-duplicates ---------------------------------------------------------------------------------
def test_planted_near_duplicates_found_with_keeper_and_flags():
    x, labels = _clusters(200)
    rng = np.random.default_rng(1)
    x[150] = x[10] + 0.02 * rng.standard_normal(x.shape[1])  # a copy of 10
    x[151] = x[20] + 0.02 * rng.standard_normal(x.shape[1])  # a copy of 20
    labels = labels.tolist()
    labels[151] = "c2" if labels[20] != "c2" else "c1"  # the copy carries another label
    splits = ["train"] * 200
    splits[150] = "test"  # the copy of 10 leaks into test
    widths = [100] * 200
    widths[150] = 400  # and is the larger one
    z = normalise(x)
    ids = _ids(200)
    found = duplicates.find_near_duplicates(ids, neighbours=nearest_neighbours(z, 5, normalised=True), normalised=z,
                                            labels=labels, splits=splits, widths=widths, heights=[100] * 200,
                                            cosine=0.995)
    by_id = {f.image_id: f for f in found}
    assert set(by_id) == {ids[10], ids[150], ids[20], ids[151]}
    group_a = by_id[ids[10]].details
    assert group_a["keeper"] == ids[150] and group_a["straddles_splits"] and by_id[ids[10]].is_issue
    assert by_id[ids[150]].is_issue  # the keeper too: its group straddles train and test
    group_b = by_id[ids[20]].details
    assert group_b["conflicting_labels"] and sorted(group_b["labels"]) == sorted({labels[20], labels[151]})
    assert all(f.score < 0.05 for f in found if f.is_issue)
    assert by_id[ids[20]].details["keeper"] == by_id[ids[151]].details["keeper"]


def test_keeper_prefers_resolution_then_encoding_then_label_then_seen_first():
    x = np.random.default_rng(2).standard_normal((40, 6)).astype(np.float32)
    x[1] = x[0]
    x[2] = x[0]
    z = normalise(x)
    ids = _ids(40)
    kwargs = dict(neighbours=nearest_neighbours(z, 3, normalised=True), normalised=z, cosine=0.999)
    same = dict(widths=[10] * 40, heights=[10] * 40)
    pick = lambda found: found[0].details["keeper"]  # noqa: E731
    chosen = duplicates.find_near_duplicates(ids, widths=[10, 10, 20] + [10] * 37, heights=[10] * 40, **kwargs)
    assert pick(chosen) == ids[2] and chosen[0].details["keeper_because"] == "the largest resolution, 20x10"
    chosen = duplicates.find_near_duplicates(ids, encoding_quality=[30.0, 90.0, 75.0] + [90.0] * 37, **same, **kwargs)
    assert pick(chosen) == ids[1] and "JPEG quality 90" in chosen[0].details["keeper_because"]
    assert pick(duplicates.find_near_duplicates(ids, encoding_quality=[90.0, 101.0, 90.0] + [None] * 37,
                                                **same, **kwargs)) == ids[1]  # lossless wins
    assert pick(duplicates.find_near_duplicates(ids, labels=[None, None, "a"] + [None] * 37, **same, **kwargs)) == ids[2]
    seen = [f"2026-01-0{k % 9 + 1}" for k in range(40)]
    seen[:3] = ["2026-02-01", "2026-01-15", "2026-03-01"]
    assert pick(duplicates.find_near_duplicates(ids, seen=seen, **same, **kwargs)) == ids[1]
    # bytes per pixel only break a tie: the same picture stored with more detail
    assert pick(duplicates.find_near_duplicates(ids, file_sizes=[100, 100, 300] + [100] * 37, **same, **kwargs)) == ids[2]
    plain = duplicates.find_near_duplicates(ids, **same, **kwargs)
    assert pick(plain) == ids[0]
    assert [(f.image_id, f.is_issue, f.score >= 0.5) for f in plain] == [
        (ids[0], False, True), (ids[1], True, False), (ids[2], True, False)]


def test_phash_links_without_features():
    hashes = ["0f0f0f0f0f0f0f0f", "0f0f0f0f0f0f0f0e", "f0f0f0f0f0f0f0f0", None]
    found = duplicates.find_near_duplicates(_ids(4), phashes=hashes, phash_bits=2)
    assert {f.image_id for f in found} == set(_ids(2))
    assert found[0].details["closest_phash_bits"] == 1


def test_exact_duplicates_reported_with_label_conflicts():
    found = duplicates.exact_duplicate_findings(
        [{"image_id": "a" * 64, "paths": ["/x/2.jpg", "/x/1.jpg"]}, {"image_id": "b" * 64, "paths": ["/y.jpg"]}],
        [{"image_id": "a" * 64, "labels": ["cat", "dog"]}])
    assert len(found) == 1 and found[0].kind == "exact_duplicate" and found[0].is_issue
    assert found[0].details["keep"] == "/x/1.jpg" and found[0].details["conflicting_labels"] == ["cat", "dog"]


def test_near_duplicate_bad_input():
    z = normalise(np.eye(4, dtype=np.float32))
    with pytest.raises(InputError, match="neither"):
        duplicates.find_near_duplicates(_ids(4))
    with pytest.raises(InputError, match="labels has 2 rows but there are 4"):
        duplicates.find_near_duplicates(_ids(4), neighbours=nearest_neighbours(z, 2, normalised=True), labels=["a", "b"])
    with pytest.raises(InputError, match=r"cosine .* must be in \(0, 1\]"):
        duplicates.find_near_duplicates(_ids(4), neighbours=nearest_neighbours(z, 2, normalised=True), cosine=1.5)
    with pytest.raises(InputError, match="NaN"):
        normalise(np.array([[1.0, np.nan], [0.0, 1.0]]))


# -- outliers ----------------------------------------------------------------------------------------
def test_planted_outliers_rank_top():
    x, labels = _clusters(300)
    rng = np.random.default_rng(3)
    planted = [5, 77, 190]
    for row in planted:
        x[row] = rng.standard_normal(x.shape[1]) * 12
    z = normalise(x)
    found = outliers.find_outliers(_ids(300), nearest_neighbours(z, 10, normalised=True))
    worst = sorted(found, key=lambda f: f.score)[:3]
    assert {f.image_id for f in worst} == {_ids(300)[r] for r in planted}
    assert all(f.is_issue and f.score < 0.5 for f in worst)
    assert sum(f.is_issue for f in found) <= 10
    assert all(0.0 <= f.score <= 1.0 for f in found)


def test_class_outliers_find_a_member_of_the_wrong_cluster():
    x, labels = _clusters(300)
    labels = labels.copy()
    x[4] = x[5]  # row 4 (class c1) sits inside class c2's cluster, far from its own class
    x[4] += 0.1
    z = normalise(x)
    found = outliers.find_class_outliers(_ids(300), z, labels.tolist())
    worst = min((f for f in found if f.details["label"] == labels[4]), key=lambda f: f.score)
    assert worst.image_id == _ids(300)[4] and worst.is_issue
    global_scores = {f.image_id: f for f in outliers.find_outliers(_ids(300), nearest_neighbours(z, 10, normalised=True))}
    assert not global_scores[_ids(300)[4]].is_issue  # globally it is in a crowd


def test_outliers_bad_input():
    z = normalise(np.random.default_rng(0).standard_normal((10, 3)))
    graph = nearest_neighbours(z, 3, normalised=True)
    with pytest.raises(InputError, match="z_threshold must be > 0"):
        outliers.find_outliers(_ids(10), graph, z_threshold=0)
    with pytest.raises(InputError, match="neighbours has 10 rows but there are 3"):
        outliers.find_outliers(_ids(3), graph)
    with pytest.raises(InputError, match="k .* must be a positive integer"):
        nearest_neighbours(z, 0)


def test_neighbours_exclude_self_even_with_identical_rows():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    x[1] = x[0]
    graph = nearest_neighbours(x, 3)
    assert not (graph.index == np.arange(20)[:, None]).any()
    assert graph.index[0, 0] == 1 and graph.index[1, 0] == 0


def test_approximate_index_agrees_with_exact_on_clear_neighbours():
    x, _ = _clusters(600, dim=16)
    x[300:310] = x[0:10] + 0.001
    exact = nearest_neighbours(x, 5)
    approx = nearest_neighbours(x, 5, exact_limit=100)
    assert not approx.exact
    assert (approx.index[:10, 0] == np.arange(300, 310)).all()
    assert (np.abs(approx.similarity[:, 0] - exact.similarity[:, 0]) < 1e-4).mean() > 0.9


# -- label issues ------------------------------------------------------------------------------------
def test_planted_label_flips_are_found():
    x, labels = _clusters(450, separation=3.0)
    rng = np.random.default_rng(4)
    flipped = rng.choice(450, size=25, replace=False)
    noisy = labels.copy()
    for row in flipped:
        noisy[row] = [c for c in ("c0", "c1", "c2") if c != labels[row]][int(rng.integers(2))]
    probs, class_names = label_issues.out_of_fold_probabilities(x, noisy.tolist())
    found = label_issues.find_label_issues(_ids(450), noisy.tolist(), probs, class_names)
    flagged = {int(f.image_id, 16) for f in found if f.is_issue}
    recall = len(flagged & set(flipped.tolist())) / len(flipped)
    precision = len(flagged & set(flipped.tolist())) / max(len(flagged), 1)
    assert recall >= 0.85 and precision >= 0.7, (recall, precision)
    suggested = {int(f.image_id, 16): f.details["suggested_label"] for f in found if f.is_issue}
    right = [suggested[r] == labels[r] for r in flipped if r in suggested]
    assert np.mean(right) >= 0.9
    estimate = label_issues.estimate_label_errors(noisy.tolist(), probs, class_names)
    assert 12 <= estimate <= 50


def test_label_issues_bad_input():
    probs = np.full((3, 2), 0.5)
    with pytest.raises(InputError, match=r"not among the classes"):
        label_issues.find_label_issues(_ids(3), ["a", "b", "z"], probs, ["a", "b"])
    with pytest.raises(InputError, match=r"shape \(images, classes\) = \(3, 3\)"):
        label_issues.find_label_issues(_ids(3), ["a", "b", "a"], probs, ["a", "b", "c"])
    with pytest.raises(InputError, match="probability distribution"):
        label_issues.find_label_issues(_ids(3), ["a", "b", "a"], probs * 3, ["a", "b"])
    with pytest.raises(InputError, match=">= 2 classes with >= 2 images"):
        label_issues.out_of_fold_probabilities(np.zeros((3, 2)), ["a", "a", "b"])


# -- classes -----------------------------------------------------------------------------------------
def test_rare_class_and_confusable_pairs():
    x, labels = _clusters(330, k=3, separation=4.0)
    labels = labels.tolist()
    # c2 made rare: keep 12 of its 110 images; c0 and c1 made confusable: move c1 next to c0
    keep = [r for r in range(330) if labels[r] != "c2" or r < 36]
    x, labels = x[keep], [labels[r] for r in keep]
    c0 = np.mean([v for v, lab in zip(x, labels) if lab == "c0"], axis=0)
    c1 = np.mean([v for v, lab in zip(x, labels) if lab == "c1"], axis=0)
    x = np.array([v - (c1 - c0) * 0.9 if lab == "c1" else v for v, lab in zip(x, labels)], dtype=np.float32)
    ids = _ids(len(labels))
    rare = classes.find_rare_classes(ids, labels)
    assert {f.details["label"] for f in rare} == {"c2"} and len(rare) == 12
    assert all(f.is_issue and abs(f.score - 12 / 110) < 1e-9 for f in rare)
    graph = nearest_neighbours(x, 10)
    pairs = classes.overlap_pairs(graph, labels)
    assert pairs[0]["classes"] == ["c0", "c1"] and pairs[0]["overlap"] > pairs[1]["overlap"]
    probs, class_names = label_issues.out_of_fold_probabilities(x, labels)
    assert classes.confusion_pairs(labels, probs, class_names)[0]["classes"] == ["c0", "c1"]
    overlap = classes.find_class_overlap(ids, labels, graph, pairs[:1])
    assert overlap and {f.details["label"] for f in overlap} <= {"c0", "c1"}


def test_balanced_classes_have_no_rare_class():
    assert classes.find_rare_classes(_ids(60), ["a", "b", "c"] * 20) == []
    assert classes.imbalance_summary(["a"] * 30 + ["b"] * 10)["imbalance_ratio"] == 3.0


def test_knn_vote_and_the_more_accurate_predictor_wins():
    x, labels = _clusters(120, separation=4.0)
    graph = nearest_neighbours(x, 20)
    probs, k = label_issues.knn_probabilities(graph.index, labels.tolist(), ["c0", "c1", "c2"], choices=(5, 20))
    assert k in (5, 20) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == np.array([int(c[1]) for c in labels])).mean() > 0.95
    uniform = np.full_like(probs, 1 / 3)
    name, chosen, accuracy = label_issues.choose_probabilities(labels.tolist(), {"flat": uniform, "knn": probs},
                                                              ["c0", "c1", "c2"])
    assert name == "knn" and chosen is not uniform and accuracy["knn"] > accuracy["flat"]
