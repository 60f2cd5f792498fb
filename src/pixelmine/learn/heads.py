"""Heads on cached features: scikit-learn estimators (keyword-only ``__init__``, ``fit`` returns ``self``,
learned state ends in ``_``), so they work with ``clone``, ``cross_val_predict`` and pipelines.

    logreg  LogisticProbe   multinomial logistic regression (the default; calibrated, fast)
    svm     LinearSVMProbe  linear SVM, probabilities by sigmoid calibration on internal folds
    knn     KNNProbe        cosine k-nearest neighbours with class-balanced, smoothed votes

Each takes ``standardize`` (zero mean / unit variance per feature) and ``class_weight`` ("balanced" weighs a
class inversely to its frequency, so a rare class is not ignored), and ``fit`` takes ``sample_weight`` (the
group-balanced refit of :mod:`pixelmine.learn.balance` weighs each image; it multiplies the class weights). ``HEADS`` maps the CLI names to classes;
``SEARCH_SPACES`` lists the hyper-parameter values the validation search tries, most promising first.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import InputError


class _Probe(ClassifierMixin, BaseEstimator):
    """Shared fit/predict plumbing: input validation, classes, a standardising pipeline."""

    def _check_fit_input(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes to learn; got 1 class: "
                             f"{self.classes_[0]!r}")
        return X, y, counts

    def _scaler(self):
        return StandardScaler() if self.standardize else "passthrough"

    def _fit_params(self, step: str, head_weights, image_weights) -> dict:
        """Pipeline fit parameters: ``head_weights`` for the head ``step``; the scaler's mean and variance use
        the images' own weights, so a weight of 2 means what a second copy of the image would."""
        params = {} if head_weights is None else {f"{step}__sample_weight": head_weights}
        if self.standardize and image_weights is not None:
            params["standardscaler__sample_weight"] = image_weights
        return params

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, n_classes) probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.model_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        probs = self.predict_proba(X)
        return self.classes_[np.argmax(probs, axis=1)]


class LogisticProbe(_Probe):
    """Multinomial logistic regression on (standardised) features; ``C`` is the inverse L2 strength."""

    def __init__(self, *, C: float = 0.1, class_weight: str | None = "balanced", standardize: bool = True,
                 max_iter: int = 2000, tol: float = 1e-4, random_state: int | None = 0):
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None) -> "LogisticProbe":
        from threadpoolctl import threadpool_limits

        X, y, _ = self._check_fit_input(X, y)
        sample_weight = _checked_weights(sample_weight, len(y))
        head = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, tol=self.tol,
                                  random_state=self.random_state)
        # One BLAS thread: L-BFGS on (images x ~1,000 features) @ (features x classes) gains nothing from more
        # (20,000 x 1,280 Fashion-MNIST features: 4.7 s on one thread, 11.5 s on two), and the solver stops
        # at a tolerance, so a thread count that sums in another order would give a slightly different model.
        with threadpool_limits(limits=1):
            self.model_ = make_pipeline(self._scaler(), head)
            self.model_.fit(X, y, **self._fit_params("logisticregression", sample_weight, sample_weight))
        self.n_iter_ = head.n_iter_
        return self


class LinearSVMProbe(_Probe):
    """Linear SVM (squared hinge, L2); probabilities from sigmoid (Platt) calibration on ``calibration_folds``
    internal folds, averaged over the folds' models."""

    def __init__(self, *, C: float = 0.01, class_weight: str | None = "balanced", standardize: bool = True,
                 calibration_folds: int = 3, max_iter: int = 5000, random_state: int | None = 0):
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.calibration_folds = calibration_folds
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None) -> "LinearSVMProbe":
        X, y, counts = self._check_fit_input(X, y)
        sample_weight = _checked_weights(sample_weight, len(y))
        folds = min(self.calibration_folds, int(counts.min()))
        if folds < 2:
            rare = str(self.classes_[np.argmin(counts)])
            raise ValueError(f"LinearSVMProbe calibrates its probabilities on internal folds and needs at least 2 "
                             f"examples of every class; class {rare!r} has {int(counts.min())}")
        # Class weights enter as sample weights, so the SVM *and* its calibration see the weighted classes
        # (LinearSVC's own class_weight would be undone by unweighted calibration).
        weights = None
        if self.class_weight is not None:
            per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            weights = per_class[np.searchsorted(self.classes_, y)]
        if sample_weight is not None:
            weights = sample_weight if weights is None else weights * sample_weight
        svm = LinearSVC(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=folds)
        self.model_ = make_pipeline(self._scaler(), calibrated)
        self.model_.fit(X, y, **self._fit_params("calibratedclassifiercv", weights, sample_weight))
        self.n_iter_ = max(int(c.estimator.n_iter_) for c in calibrated.calibrated_classifiers_)
        return self


class KNNProbe(_Probe):
    """k nearest neighbours by cosine similarity; each neighbour votes with its class weight.

    Probabilities are the weighted vote shares smoothed towards uniform (``smoothing`` pseudo-votes spread
    over the classes), so a unanimous vote of 10 neighbours gives about 0.9, not an overconfident 1.0.
    """

    def __init__(self, *, n_neighbors: int = 10, class_weight: str | None = "balanced", standardize: bool = False,
                 smoothing: float = 1.0):
        self.n_neighbors = n_neighbors
        self.class_weight = class_weight
        self.standardize = standardize
        self.smoothing = smoothing

    def _embed(self, X) -> np.ndarray:
        Z = self.scaler_.transform(X) if self.scaler_ is not None else np.asarray(X, dtype=np.float64)
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def fit(self, X, y, sample_weight=None) -> "KNNProbe":
        X, y, _ = self._check_fit_input(X, y)
        sample_weight = _checked_weights(sample_weight, len(y))
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1; got {self.n_neighbors!r}")
        self.scaler_ = StandardScaler().fit(X, sample_weight=sample_weight) if self.standardize else None
        self.y_index_ = np.searchsorted(self.classes_, y)
        self.class_weights_ = (compute_class_weight(self.class_weight, classes=self.classes_, y=y)
                               if self.class_weight is not None else np.ones(len(self.classes_)))
        # each neighbour's vote: its class weight times its own weight
        self.vote_weights_ = self.class_weights_[self.y_index_] * (1.0 if sample_weight is None else sample_weight)
        self.n_neighbors_ = min(self.n_neighbors, len(y))
        self.index_ = NearestNeighbors(n_neighbors=self.n_neighbors_, algorithm="brute").fit(self._embed(X))
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        _, neighbours = self.index_.kneighbors(self._embed(X))
        votes = np.zeros((len(X), len(self.classes_)))
        labels = self.y_index_[neighbours]
        # heads saved before sample weights existed have no vote_weights_: their votes are the class weights
        vote_weights = getattr(self, "vote_weights_", None)
        weights = (self.class_weights_[labels.ravel()] if vote_weights is None
                   else vote_weights[neighbours.ravel()])
        np.add.at(votes, (np.repeat(np.arange(len(X)), labels.shape[1]), labels.ravel()), weights)
        # normalise the weighted votes to n_neighbors_ total so smoothing means the same for every class mix
        # (neighbours that all weigh 0 cast no vote: the smoothing alone speaks, uniform)
        total = votes.sum(axis=1, keepdims=True)
        votes *= np.divide(self.n_neighbors_, total, out=np.zeros_like(total), where=total > 0)
        votes += self.smoothing / len(self.classes_)
        return votes / votes.sum(axis=1, keepdims=True)


def _checked_weights(sample_weight, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n,) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"sample_weight must hold {n} finite, non-negative weights, not all zero; got shape "
                         f"{weights.shape}")
    return weights


HEADS: dict[str, type[_Probe]] = {"logreg": LogisticProbe, "svm": LinearSVMProbe, "knn": KNNProbe}

# Values tried on the validation split, in this order, until the time budget runs out.
SEARCH_SPACES: dict[str, list[dict]] = {
    "logreg": [{"C": c} for c in (0.1, 0.01, 1.0, 0.003, 0.03, 0.3, 3.0, 0.001)],
    "svm": [{"C": c} for c in (0.01, 0.001, 0.1, 0.003, 0.03, 1.0, 0.0003)],
    "knn": [{"n_neighbors": k, "standardize": s} for s in (False, True) for k in (10, 5, 20, 40, 3)],
}


def create_head(name: str, **params) -> _Probe:
    """A head by its CLI name; unknown names list the valid ones."""
    try:
        cls = HEADS[name]
    except KeyError:
        raise InputError(f"the head {name!r} is not a feature head; choose one of: {', '.join(HEADS)} "
                         "(or 'finetune' to train the network itself)") from None
    return cls(**params)
