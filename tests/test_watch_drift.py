"""DriftMonitor on planted truth: synthetic feature sets of the real width (D = 1280, a few clusters of
non-negative, ReLU-like vectors), with and without a planted shift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelmine.errors import InputError
from pixelmine.watch.drift import DriftMonitor, DriftReport

D = 1280
CLUSTERS = 4


class Features:
    """A seeded generator of feature vectors: CLUSTERS known classes, plus shifted and unseen variants.

    The classes come from ``seed``; the draws from ``stream``, so each test has its own rows whichever tests
    run, and none of them repeats a reference row."""

    def __init__(self, stream: int, seed: int = 7):
        classes = np.random.default_rng(seed)
        self.centres = classes.normal(size=(CLUSTERS + 1, D))  # the last one is the unseen class
        self.shift = classes.normal(size=D)  # a planted mean shift, half the noise's spread per dimension
        self.rng = np.random.default_rng([seed, stream])

    def draw(self, n: int, *, unseen: bool = False, shifted: bool = False) -> np.ndarray:
        classes = np.full(n, CLUSTERS) if unseen else self.rng.integers(0, CLUSTERS, n)
        rows = self.centres[classes] + 2.0 * self.rng.normal(size=(n, D))
        if shifted:
            rows = rows + self.shift
        return np.abs(rows).astype(np.float32)


@pytest.fixture
def features(request) -> Features:
    return Features(stream=1 + sum(map(ord, request.node.name)))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return Features(stream=0).draw(800)


def feed(monitor: DriftMonitor, rows: np.ndarray, **flags) -> list[DriftReport]:
    return [report for report in (monitor.add(row, **flags) for row in rows) if report is not None]


def first_alarm(monitor: DriftMonitor, rows: np.ndarray) -> tuple[int | None, DriftReport | None]:
    """(arrivals of ``rows`` up to the first alarming report, that report), (None, None) when none alarms."""
    for count, row in enumerate(rows, start=1):
        report = monitor.add(row)
        if report is not None and report.alarm:
            return count, report
    return None, None


def test_no_shift_rarely_alarms(features, reference):
    # 20 full windows from the reference's own distribution, each monitor with its own seed (its own PCA
    # half, reference draws and permutations); the rule's bound is 2 % per window, 2 of 20 leaves room
    alarms = 0
    for seed in range(20):
        monitor = DriftMonitor(reference, window=200, every=200, min_window=200, seed=seed)
        (report,) = feed(monitor, features.draw(200))
        assert report.n_window == 200 and report.n_reference == 200
        assert 0.0 < report.auc_p_value <= 1.0 and 0.0 < report.mmd_p_value <= 1.0
        assert report.alarm == bool(report.reasons)
        alarms += report.alarm
    assert alarms <= 2


@pytest.mark.parametrize("kind", ["mean shift", "unseen class"])
def test_planted_shift_alarms_within_200_arrivals(features, reference, kind):
    monitor = DriftMonitor(reference, seed=3)
    assert not any(report.alarm for report in feed(monitor, features.draw(100)))  # a clean start
    shifted = features.draw(200, shifted=True) if kind == "mean shift" else features.draw(200, unseen=True)
    needed, report = first_alarm(monitor, shifted)
    assert needed is not None and needed <= 200
    assert report.reasons and report.n_window == min(200, 100 + needed)
    assert any("separable" in reason or "MMD" in reason for reason in report.reasons)


def test_reports_come_every_few_arrivals_once_the_window_is_long_enough(features, reference):
    monitor = DriftMonitor(reference, window=100, every=20, min_window=50, n_permutations=100)
    arrivals = [count for count, row in enumerate(features.draw(180), start=1) if monitor.add(row) is not None]
    assert arrivals == [60, 80, 100, 120, 140, 160, 180]
    assert len(monitor) == 100  # the window rolls
    assert monitor.report().n_window == 100


def test_same_seed_same_reports_and_reset_starts_over(features, reference):
    stream = features.draw(100)

    def run(seed: int) -> list[dict]:
        monitor = DriftMonitor(reference, seed=seed)
        return [_without_time(report) for report in feed(monitor, stream)]

    first = run(11)
    assert first == run(11)
    assert [r["auc"] for r in first] != [r["auc"] for r in run(12)]

    monitor = DriftMonitor(reference, seed=11)
    feed(monitor, features.draw(150))
    monitor.reset()
    assert len(monitor) == 0
    assert [_without_time(report) for report in feed(monitor, stream)] == first


def test_labels_and_shares_count_the_window_only(features, reference):
    monitor = DriftMonitor(reference, window=60, every=10, min_window=50, reference_labels=["a"] * 3 + ["b"],
                           reference_uncertain_share=0.1, reference_novel_share=0.05)
    rows = features.draw(100)
    # the first 40 arrivals roll out of a 60-arrival window: only the last 60 count
    for i, row in enumerate(rows):
        monitor.add(row, label="old" if i < 40 else ("a" if i % 3 else "b"), uncertain=i >= 40 and i % 4 == 0,
                    novel=i < 40)
    report = monitor.report()
    expected_labels = {"a": sum(1 for i in range(40, 100) if i % 3), "b": sum(1 for i in range(40, 100) if not i % 3)}
    assert report.labels == expected_labels
    assert report.uncertain_share == pytest.approx(sum(1 for i in range(40, 100) if i % 4 == 0) / 60)
    assert report.novel_share == 0.0
    assert report.reference_labels == {"a": 3, "b": 1}
    assert report.reference_uncertain_share == 0.1 and report.reference_novel_share == 0.05
    unlabelled = DriftMonitor(reference, window=60, every=10, min_window=50)
    feed(unlabelled, rows[:60])
    assert unlabelled.report().labels == {} and unlabelled.report().reference_labels is None


def test_a_rise_in_novel_predictions_alarms_with_a_plain_reason(features, reference):
    monitor = DriftMonitor(reference, reference_novel_share=0.01, seed=5)
    rows = features.draw(100)
    for i, row in enumerate(rows):
        monitor.add(row, novel=i % 5 < 2, label="cat")
    report = monitor.report()
    assert report.novel_share == pytest.approx(0.40)
    assert report.alarm
    assert "the share of novel predictions is 0.40 against 0.01 in the reference" in report.reasons
    # without a reference share there is nothing to compare against: the share alone never alarms
    plain = DriftMonitor(reference, seed=5)
    for i, row in enumerate(rows):
        plain.add(row, novel=i % 5 < 2)
    assert not any("novel" in reason for reason in plain.report().reasons)


def test_report_is_plain_data(features, reference):
    monitor = DriftMonitor(reference, reference_labels=["a", "b"])
    (report, *_) = feed(monitor, features.draw(50, unseen=True), label="a")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_window"] == 50 and data["labels"] == {"a": 50} and data["seconds"] >= 0
    assert {"auc", "auc_threshold", "auc_p_value", "mmd", "mmd_p_value", "uncertain_share", "novel_share",
            "alarm", "reasons", "reference_labels"} <= set(data)


def test_bad_input_says_what_to_do(features, reference):
    with pytest.raises(InputError, match="at least 100 rows .* lower min_window"):
        DriftMonitor(reference[:99])
    with pytest.raises(InputError, match="2-D"):
        DriftMonitor(reference[0])
    broken = reference.copy()
    broken[3, 5] = np.nan
    with pytest.raises(InputError, match="NaN.*re-extract"):
        DriftMonitor(broken)
    with pytest.raises(InputError, match="'min_window'.*must not exceed 'window'"):
        DriftMonitor(reference, window=40, min_window=50)
    with pytest.raises(InputError, match="alpha=0.001 could never be reached"):
        DriftMonitor(reference, alpha=0.001, n_permutations=200)
    with pytest.raises(InputError, match="'reference_novel_share'"):
        DriftMonitor(reference, reference_novel_share=1.5)
    monitor = DriftMonitor(reference)
    with pytest.raises(InputError, match="length 1280"):
        monitor.add(np.zeros(512))
    row = features.draw(1)[0]
    row[0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        monitor.add(row)
    with pytest.raises(InputError, match="holds 0 arrivals"):
        monitor.report()


def _without_time(report: DriftReport) -> dict:
    data = report.to_dict()
    data.pop("seconds")
    return data
