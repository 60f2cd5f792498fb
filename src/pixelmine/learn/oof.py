"""Out-of-fold predicted probabilities: every labelled image gets a probability vector from a model that
never saw it. Discovery reads them to find label errors (confident learning needs exactly this).

Folds are stratified by class and grouped by near-duplicate group (``StratifiedGroupKFold``), so a copy of an
image in the training fold cannot vouch for its label.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold

from .heads import LogisticProbe

log = logging.getLogger(__name__)


def out_of_fold_probabilities(estimator, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *,
                              n_splits: int = 5, seed: int = 0,
                              progress=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(probs (N, K) in ``np.unique(y)`` column order, fold number per row, notes).

    A fold whose training part is too small for ``estimator`` (e.g. the SVM's calibration needs two images
    of every class) falls back to logistic regression for that fold; ``notes`` says so.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    n_splits = int(min(n_splits, len(np.unique(groups))))
    probs = np.zeros((len(y), len(classes)))
    folds = np.full(len(y), -1, dtype=np.int64)
    notes: list[str] = []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class in y has only n members": expected for rare classes, handled below.
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        split_list = list(splitter.split(X, y, groups))
    for fold, (train, test) in enumerate(split_list):
        model = clone(estimator)
        try:
            model.fit(X[train], y[train])
        except ValueError as exc:
            notes.append(f"fold {fold}: {type(estimator).__name__} could not fit ({exc}); used logistic regression")
            model = LogisticProbe(random_state=seed).fit(X[train], y[train])
        columns = np.searchsorted(classes, model.classes_)
        probs[np.ix_(test, columns)] = model.predict_proba(X[test])
        folds[test] = fold
        if progress is not None:
            progress(fold + 1, len(split_list))
    return probs, folds, notes
