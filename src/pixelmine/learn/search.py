"""A small, time-boxed hyper-parameter search on the validation split.

Candidates are tried in the order given (most promising first) until ``budget_s`` seconds have passed; the
first candidate always runs. The winner has the highest validation balanced accuracy, ties broken by the
lower log loss. Large training sets are subsampled (stratified) for the search only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score, log_loss

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    best_params: dict
    trials: list[dict] = field(default_factory=list)  # params, val_balanced_accuracy, val_log_loss, fit_s
    skipped: str | None = None  # why no search ran (e.g. no validation images)
    n_candidates: int = 0  # how many settings were on the list (``len(trials)`` of them were tried)
    budget_s: float | None = None

    def to_dict(self) -> dict:
        return {"best_params": self.best_params, "trials": self.trials, "skipped": self.skipped,
                "n_candidates": self.n_candidates, "budget_s": self.budget_s}

    def cut_short_note(self, what: str = "the search") -> str | None:
        """Why the choice may differ on another machine: the time box stopped the search early."""
        if self.skipped or len(self.trials) >= self.n_candidates:
            return None
        tried = ", ".join(str(t["params"]) for t in self.trials)
        return (f"{what} tried {len(self.trials)} of {self.n_candidates} settings ({tried}) within its "
                f"{self.budget_s:.0f} s budget: how many fit in depends on the machine's speed and load, so the "
                "chosen setting can differ between runs; raise the budget (--search-budget) for a complete, "
                "reproducible search")


def stratified_subsample(y: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Row indices of at most ``max_samples`` rows keeping class proportions (every class keeps >= 1 row)."""
    n = len(y)
    if n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = max(1, int(round(len(rows) * max_samples / n)))
        keep.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


def search(estimator, candidates: list[dict], X_train, y_train, X_val, y_val, *, budget_s: float = 60.0,
           max_samples: int = 20_000, seed: int = 0) -> SearchResult:
    """Try ``candidates`` (dicts of parameters for ``estimator``) on (train -> val)."""
    if not candidates:
        return SearchResult({}, skipped="no candidates")
    val_classes = set(np.unique(y_val).tolist()) if len(y_val) else set()
    if len(y_val) == 0 or len(val_classes) < 2:
        return SearchResult({}, skipped=f"the val split has {len(y_val)} images of {len(val_classes)} classes; "
                                        "need 2 classes or more to compare settings; defaults used")
    rows = stratified_subsample(np.asarray(y_train), max_samples, seed)
    X_fit, y_fit = X_train[rows], np.asarray(y_train)[rows]
    started = time.perf_counter()
    trials: list[dict] = []
    for params in candidates:
        if trials and time.perf_counter() - started > budget_s:
            log.info("search budget of %.0f s spent after %d of %d candidates", budget_s, len(trials), len(candidates))
            break
        t0 = time.perf_counter()
        model = clone(estimator).set_params(**params).fit(X_fit, y_fit)
        probs = np.asarray(model.predict_proba(X_val), dtype=np.float64)
        probs /= probs.sum(axis=1, keepdims=True)  # float32 features give float32 probabilities
        predicted = model.classes_[np.argmax(probs, axis=1)]
        known = np.isin(y_val, model.classes_)
        trials.append({
            "params": params,
            "val_balanced_accuracy": float(balanced_accuracy_score(y_val, predicted)),
            "val_log_loss": float(log_loss(y_val[known], probs[known], labels=model.classes_)) if known.any() else None,
            "fit_s": round(time.perf_counter() - t0, 3),
        })
    best = max(trials, key=lambda t: (round(t["val_balanced_accuracy"], 6),
                                       -(t["val_log_loss"] if t["val_log_loss"] is not None else np.inf)))
    return SearchResult(dict(best["params"]), trials, n_candidates=len(candidates), budget_s=budget_s)
