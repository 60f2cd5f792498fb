"""Drift monitoring: is a rolling window of arrivals still drawn from the reference (training or catalogued)
features?

    monitor = DriftMonitor(reference_vectors, window=200, every=25)
    for vector, prediction in stream:
        report = monitor.add(vector, uncertain=prediction.uncertain, novel=prediction.novel, label=prediction.label)
        if report is not None and report.alarm:
            print(report.reasons)

Each report compares the window against an equally large, freshly drawn (seeded) sample of the reference, in
the space of a PCA (32 components) fitted once on the L2-normalised reference features, with two tests that
share one set of label permutations. The PCA is fitted on one seeded half of the reference sample and the
windows are compared with the other half: rows a PCA was fitted on spread wider along its components than
new rows do, and with D = 1280 that alone made the MMD reject every window without drift.

* a **domain classifier**: a linear logistic model told to separate window from reference, scored by its
  5-fold out-of-fold ROC AUC. The logistic fit is one Newton (IRLS) step from zero with sklearn's default L2
  penalty (C = 1) on standardised components. That step is a ridge fit to the labels, so the out-of-fold
  scores are a fixed linear map of the labels (``scores = H @ y``) and the AUC of every permutation costs one
  matrix product instead of 5 fits: an exact permutation test (200 permutations) within the update budget,
  where a permutation test of the fully converged fit would take seconds. Near the null, where the threshold
  matters, one step from zero is the converged fit to first order; far from it both separate the window.
  ``benchmarks/drift_bench.py`` measures the two AUCs side by side on real features.
* a **kernel two-sample test**: the unbiased squared MMD with an RBF kernel whose bandwidth is the median
  pairwise distance of the pooled sample (the median heuristic), with its permutation p-value.

The alarm rule: the features drifted when either test is significant at ``alpha`` (p ≤ alpha), or the share
of novel / uncertain predictions is significantly above the reference's (one-sided exact binomial test at
``alpha``, only when the reference share was given). By the union bound, a window without drift alarms with
probability at most (number of tests) x alpha: 2 % for the two feature tests at the default alpha = 0.01,
4 % with both shares. Measured on the demo set's MobileNetV2 features (benchmarks/drift_bench.py): 0 of 50
full windows without drift alarmed, and 1.4 % of all reports (every 25 arrivals, so 7 looks per 200
arrivals: 10 % of the monitors alarmed at least once in their first 200). A Bonferroni split of alpha
was rejected: with 200 permutations the smallest p-value is 1/201, so alpha / 4 could never be reached.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ..optional import require

FOLDS = 5  # out-of-fold AUC of the domain classifier
RIDGE = 1.0  # L2 penalty of the logistic step, 1 / C with sklearn's default C = 1


@dataclass
class DriftReport:
    """One comparison of the arrivals window against the reference."""

    n_window: int  # arrivals in the window compared
    n_reference: int  # reference vectors the window was compared against (as many as the window, when it can)
    auc: float  # domain classifier: out-of-fold ROC AUC, window (positive) vs reference
    auc_threshold: float  # the (1 - alpha) quantile of that AUC over the label permutations
    auc_p_value: float
    mmd: float  # unbiased squared MMD, RBF kernel, median-heuristic bandwidth
    mmd_p_value: float
    uncertain_share: float  # share of the window's predictions flagged uncertain
    novel_share: float  # share flagged novel (unlike anything the model was trained on)
    labels: dict[str, int]  # predicted label -> count in the window
    alarm: bool  # drift is significant (see the module docstring for the rule)
    reasons: list[str] = field(default_factory=list)  # plain sentences, one per significant finding
    reference_uncertain_share: float | None = None
    reference_novel_share: float | None = None
    reference_labels: dict[str, int] | None = None  # label -> count in the reference, when given
    mmd_threshold: float = float("nan")  # the (1 - alpha) quantile of the MMD over the permutations
    alpha: float = 0.01
    seconds: float = 0.0  # compute time of this report

    def to_dict(self) -> dict:
        return asdict(self)


class DriftMonitor:
    """A rolling window of arrivals tested against a reference feature matrix (see the module docstring)."""

    def __init__(self, reference: np.ndarray, *, window: int = 200, every: int = 25, min_window: int = 50,
                 alpha: float = 0.01, n_permutations: int = 200, pca_components: int = 32,
                 max_reference: int = 2000, seed: int = 0, reference_uncertain_share: float | None = None,
                 reference_novel_share: float | None = None, reference_labels: list[str] | None = None):
        _check_settings(window=window, every=every, min_window=min_window, alpha=alpha,
                        n_permutations=n_permutations, pca_components=pca_components, max_reference=max_reference)
        for name, share in (("reference_uncertain_share", reference_uncertain_share),
                            ("reference_novel_share", reference_novel_share)):
            if share is not None and not 0.0 <= share <= 1.0:
                raise InputError(f"The '{name}' parameter of DriftMonitor must be a share in [0, 1]. "
                                 f"Got {share!r} instead.")
        reference = _check_matrix(reference, min_rows=2 * min_window)
        self.window, self.every, self.min_window = window, every, min_window
        self.alpha, self.n_permutations, self.seed = alpha, n_permutations, seed
        self.dim = int(reference.shape[1])
        self.reference_uncertain_share = reference_uncertain_share
        self.reference_novel_share = reference_novel_share
        self.reference_labels = None if reference_labels is None else \
            dict(Counter(str(label) for label in reference_labels if label is not None))
        self.n_reference_total = int(reference.shape[0])

        rng = np.random.default_rng(seed)
        sample = reference if len(reference) <= max_reference else \
            reference[np.sort(rng.choice(len(reference), max_reference, replace=False))]
        unit = _l2_normalise(np.asarray(sample, dtype=np.float64))
        # The PCA is fitted on one half and the windows are compared with the other: the rows a PCA was
        # fitted on spread wider along its components than new rows of the same distribution (with D = 1280
        # and a few hundred rows, enough for the MMD to reject every window without drift), so they would
        # make a stream without drift look different from its own reference.
        order = rng.permutation(len(unit))
        fit_rows, pool_rows = order[: len(unit) // 2], order[len(unit) // 2:]
        self.mean_, self.components_ = _pca(unit[fit_rows], min(pca_components, len(fit_rows) - 1, self.dim))
        self.reference_ = self.project(unit[pool_rows], normalised=True)  # (n, components): reports draw here
        # a fixed standardisation (the reference's spread) so that the classifier's penalty weighs every
        # component alike; fixed, it does not depend on which rows are labelled window
        self.scale_ = self.reference_.std(axis=0) + 1e-12
        self.reset()

    # -- the stream -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the arrivals; the reports after a reset repeat those of a fresh monitor."""
        self._vectors: deque[np.ndarray] = deque(maxlen=self.window)
        self._uncertain: deque[bool] = deque(maxlen=self.window)
        self._novel: deque[bool] = deque(maxlen=self.window)
        self._labels: deque[str | None] = deque(maxlen=self.window)
        self._arrivals = 0
        self._rng = np.random.default_rng([self.seed, 1])

    def __len__(self) -> int:
        return len(self._vectors)

    def project(self, vectors: np.ndarray, *, normalised: bool = False) -> np.ndarray:
        """Rows of features (n, D) in the monitor's PCA space (L2-normalised first, unless ``normalised``)."""
        unit = np.asarray(vectors, dtype=np.float64)
        if not normalised:
            unit = _l2_normalise(unit)
        return (unit - self.mean_) @ self.components_.T

    def add(self, vector: np.ndarray, *, uncertain: bool = False, novel: bool = False,
            label: str | None = None) -> DriftReport | None:
        """Record one arrival; every ``every`` arrivals, once the window holds ``min_window``, return a report."""
        row = np.asarray(vector, dtype=np.float64)
        if row.shape != (self.dim,):
            raise InputError(f"a drift arrival must be one feature vector of length {self.dim} (the reference's "
                             f"width); got shape {row.shape}. Embed it with the backbone of the reference.")
        if not np.isfinite(row).all():
            raise InputError("a drift arrival holds NaN or infinite values; skip that image or re-extract it")
        self._vectors.append(self.project(row[None, :])[0])
        self._uncertain.append(bool(uncertain))
        self._novel.append(bool(novel))
        self._labels.append(None if label is None else str(label))
        self._arrivals += 1
        if len(self._vectors) >= self.min_window and self._arrivals % self.every == 0:
            return self.report()
        return None

    # -- the tests --------------------------------------------------------------------------------------
    def report(self) -> DriftReport:
        """Compare the current window with a fresh reference sample now."""
        started = time.perf_counter()
        n_window = len(self._vectors)
        if n_window < 2 * FOLDS:
            raise InputError(f"the drift window holds {n_window} arrivals; a report needs at least {2 * FOLDS} "
                             f"(reports come by themselves from add() once it holds {self.min_window})")
        n_reference = min(n_window, len(self.reference_))
        picked = self._rng.choice(len(self.reference_), n_reference, replace=False)
        pooled = np.vstack([np.asarray(self._vectors), self.reference_[picked]]) / self.scale_
        is_window = np.r_[np.ones(n_window), np.zeros(n_reference)]
        # column 0: the observed labels; then the permutations both tests share
        labels = np.column_stack([is_window, self._rng.permuted(
            np.tile(is_window, (self.n_permutations, 1)), axis=1).T])

        aucs = _auc_columns(_out_of_fold_map(pooled, self._rng) @ labels, labels)
        mmds = _mmd_columns(pooled, labels)
        auc_p = float((1 + np.sum(aucs[1:] >= aucs[0])) / (1 + self.n_permutations))
        mmd_p = float((1 + np.sum(mmds[1:] >= mmds[0])) / (1 + self.n_permutations))
        auc_threshold = float(np.quantile(aucs[1:], 1 - self.alpha))
        mmd_threshold = float(np.quantile(mmds[1:], 1 - self.alpha))

        uncertain_share = float(np.mean(self._uncertain))
        novel_share = float(np.mean(self._novel))
        window_labels = dict(Counter(label for label in self._labels if label is not None))
        reasons = []
        if auc_p <= self.alpha:
            reasons.append(f"the arrivals are separable from the reference images (domain classifier AUC "
                           f"{aucs[0]:.2f} > {auc_threshold:.2f}, p = {auc_p:.3f})")
        if mmd_p <= self.alpha:
            reasons.append(f"the arrivals' feature distribution differs from the reference's (MMD² "
                           f"{mmds[0]:.4f} > {mmd_threshold:.4f}, p = {mmd_p:.3f})")
        for kind, flags, reference_share in (("novel", self._novel, self.reference_novel_share),
                                             ("uncertain", self._uncertain, self.reference_uncertain_share)):
            if reference_share is None:
                continue
            share = sum(flags) / n_window
            # a reference share of exactly 0 would make one novel arrival significant: floor it at half an image
            expected = max(reference_share, 0.5 / self.n_reference_total)
            if _binomial_upper_tail(sum(flags), n_window, expected) <= self.alpha:
                reasons.append(f"the share of {kind} predictions is {share:.2f} against {reference_share:.2f} "
                               "in the reference")
        alarm = bool(reasons)
        if alarm and window_labels:
            reasons.append(_label_sentence(window_labels, self.reference_labels))
        return DriftReport(
            n_window=n_window, n_reference=n_reference, auc=float(aucs[0]), auc_threshold=auc_threshold,
            auc_p_value=auc_p, mmd=float(mmds[0]), mmd_p_value=mmd_p, uncertain_share=uncertain_share,
            novel_share=novel_share, labels=window_labels, alarm=alarm, reasons=reasons,
            reference_uncertain_share=self.reference_uncertain_share,
            reference_novel_share=self.reference_novel_share,
            reference_labels=None if self.reference_labels is None else dict(self.reference_labels),
            mmd_threshold=mmd_threshold, alpha=self.alpha, seconds=time.perf_counter() - started)


# -- the statistics ---------------------------------------------------------------------------------------
def _pca(rows: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), components (k, D)) of ``rows``, from the eigenvectors of the smaller of the gram (n x n)
    and covariance (D x D) matrices: with a few hundred reference rows of D = 1280 the gram matrix is the
    cheap one (measured: 0.1 s against 1-2 s for sklearn's randomized PCA on this 2-core machine)."""
    mean = rows.mean(axis=0)
    centred = rows - mean
    if len(centred) <= centred.shape[1]:
        values, vectors = np.linalg.eigh(centred @ centred.T)
        top = np.argsort(values)[::-1][:components]
        axes = vectors[:, top].T @ centred  # u_i' X = s_i v_i'
        axes /= np.linalg.norm(axes, axis=1, keepdims=True) + 1e-12
    else:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, np.argsort(values)[::-1][:components]].T
    return mean, axes


def _out_of_fold_map(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H (n, n) with ``H @ y`` = the out-of-fold scores of the one-step logistic fit to labels ``y``.

    Per fold: beta = (X'X / 4 + RIDGE I)^-1 X'y on the training rows centred (the Newton step from zero,
    where every probability is 1/2 and the IRLS weights are 1/4; centring fits the intercept), scores of the
    held-out rows = (x - mean) beta. The folds are drawn at random, independently of the labels, and held
    fixed for the permutations: stratifying them on the observed labels would give the observed statistic
    a fold design the permuted ones lack, and the test would no longer be exact."""
    n, dim = features.shape
    folds = np.empty(n, dtype=np.int64)
    folds[rng.permutation(n)] = np.arange(n) % FOLDS
    out_of_fold = np.zeros((n, n))
    for fold in range(FOLDS):
        test, train = folds == fold, folds != fold
        centre = features[train].mean(axis=0)
        centred = features[train] - centre
        step = np.linalg.solve(centred.T @ centred / 4 + RIDGE * np.eye(dim), centred.T)
        out_of_fold[np.ix_(test, train)] = (features[test] - centre) @ step
    return out_of_fold


def _auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of ``scores`` for the 0/1 labels of the same column (Mann-Whitney, ties halved)."""
    stats = require("scipy.stats", "Drift monitoring")
    ranks = stats.rankdata(scores, axis=0)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    return ((ranks * labels).sum(axis=0) - positives * (positives + 1) / 2) / (positives * negatives)


def _mmd_columns(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unbiased squared MMD between the rows labelled 1 and 0, for each label column."""
    squared = np.sum(features ** 2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * features @ features.T, 0.0)
    off_diagonal = distances[~np.eye(len(features), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0  # median heuristic: sigma^2 = median squared distance
    kernel = np.exp(-distances / (2 * bandwidth))
    np.fill_diagonal(kernel, 0.0)
    within = np.sum(labels * (kernel @ labels), axis=0)  # sum of k over pairs inside group 1
    across_all = kernel.sum(axis=1) @ labels  # pairs with one end in group 1
    total = kernel.sum()
    n1 = labels.sum(axis=0)
    n0 = len(labels) - n1
    inside_0 = total - 2 * across_all + within
    between = across_all - within
    return within / (n1 * (n1 - 1)) + inside_0 / (n0 * (n0 - 1)) - 2 * between / (n1 * n0)


def _binomial_upper_tail(successes: int, trials: int, probability: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, probability)."""
    if successes <= 0:
        return 1.0
    if probability >= 1.0:
        return 1.0
    log_p, log_q = math.log(probability), math.log1p(-probability)
    terms = [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p
             + (trials - k) * log_q for k in range(successes, trials + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(term - top) for term in terms))


def _label_sentence(window_labels: dict[str, int], reference_labels: dict[str, int] | None) -> str:
    n = sum(window_labels.values())
    if not reference_labels:
        top = max(window_labels, key=window_labels.get)
        return f"the most frequent predicted label in the window is {top!r} ({window_labels[top] / n:.2f})"
    n_reference = sum(reference_labels.values())
    gaps = {label: window_labels.get(label, 0) / n - reference_labels.get(label, 0) / n_reference
            for label in set(window_labels) | set(reference_labels)}
    label = max(gaps, key=lambda name: abs(gaps[name]))
    return (f"the label {label!r} makes up {window_labels.get(label, 0) / n:.2f} of the window's predictions "
            f"against {reference_labels.get(label, 0) / n_reference:.2f} of the reference")


# -- input checks -----------------------------------------------------------------------------------------
def _l2_normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)  # an all-zero vector stays zero instead of turning NaN


def _check_matrix(reference, *, min_rows: int) -> np.ndarray:
    matrix = np.asarray(reference)
    if matrix.ndim != 2:
        raise InputError(f"The 'reference' parameter of DriftMonitor must be a 2-D (images, features) matrix. "
                         f"Got shape {matrix.shape} instead; pass the features of the reference images, e.g. "
                         "workspace.features().vectors")
    if matrix.shape[0] < min_rows:
        raise InputError(f"The 'reference' parameter of DriftMonitor needs at least {min_rows} rows (2 x "
                         f"min_window) to compare windows against. Got {matrix.shape[0]}; give more reference "
                         "images or lower min_window.")
    if not np.issubdtype(matrix.dtype, np.number) or not np.isfinite(matrix).all():
        raise InputError("The 'reference' parameter of DriftMonitor holds NaN, infinite or non-numeric values; "
                         "drop those rows (failed extractions) or re-extract the features")
    return matrix


def _check_settings(*, window, every, min_window, alpha, n_permutations, pca_components, max_reference) -> None:
    for name, value, low in (("window", window, 2 * FOLDS), ("every", every, 1), ("min_window", min_window, 2 * FOLDS),
                             ("n_permutations", n_permutations, 1), ("pca_components", pca_components, 1),
                             ("max_reference", max_reference, 2)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InputError(f"The '{name}' parameter of DriftMonitor must be an integer >= {low}. "
                             f"Got {value!r} instead.")
    if max_reference < 2 * min_window:
        raise InputError(f"The 'max_reference' parameter of DriftMonitor ({max_reference}) must be at least "
                         f"2 x min_window ({2 * min_window}): half fits the PCA, half is compared with the window.")
    if min_window > window:
        raise InputError(f"The 'min_window' parameter of DriftMonitor ({min_window}) must not exceed 'window' "
                         f"({window}); lower min_window or widen the window.")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"The 'alpha' parameter of DriftMonitor must be in (0, 1). Got {alpha!r} instead.")
    if alpha < 1.0 / (n_permutations + 1):
        raise InputError(f"With n_permutations={n_permutations} the smallest p-value is "
                         f"1/{n_permutations + 1}, so alpha={alpha} could never be reached; use at least "
                         f"{math.ceil(1 / alpha)} permutations or a larger alpha.")
