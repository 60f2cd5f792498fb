"""Training a head on cached features: search on val, refit, test, novelty, out-of-fold probabilities."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from .config import TrainConfig
from .data import SplitResult
from .heads import SEARCH_SPACES, create_head
from .metrics import Evaluation, evaluate
from .novelty import NoveltyScorer
from .oof import out_of_fold_probabilities
from .search import SearchResult, search
from . import artifacts
from ..progress import resolve_progress
from .outcome import TrainOutcome

log = logging.getLogger(__name__)


@dataclass
class ProbeFit:
    head: object  # fitted estimator
    novelty: NoveltyScorer
    params: dict
    search: SearchResult
    test: Evaluation
    test_probs: np.ndarray
    oof_probs: np.ndarray
    oof_folds: np.ndarray
    oof: Evaluation
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def base_head(config: TrainConfig, name: str | None = None):
    """The unfitted head for ``config`` (its class weight, standardisation and seed)."""
    name = name or config.head
    params = {"class_weight": config.class_weight, "standardize": config.standardize}
    if name != "knn":
        params["random_state"] = config.seed
    return create_head(name, **params)


def fit_oof(estimator, X: np.ndarray, y: np.ndarray, split: SplitResult, config: TrainConfig, *,
            progress=None) -> tuple[np.ndarray, np.ndarray, Evaluation, list[str]]:
    """Out-of-fold probabilities of every labelled image, and their evaluation (classes in sorted order)."""
    probs, folds, notes = out_of_fold_probabilities(estimator, X, y, split.groups, n_splits=config.cv_folds,
                                                    seed=config.seed, progress=progress)
    classes = np.unique(y)
    evaluation = evaluate(y, probs, classes, ids=split.ids, n_bootstrap=min(config.bootstrap, 200), seed=config.seed)
    return probs, folds, evaluation, notes


def fit_probe(X: np.ndarray, split: SplitResult, config: TrainConfig, *, oof_progress=None) -> ProbeFit:
    """Fit ``config.head`` on the rows of ``X`` (aligned with ``split.ids``) and measure it."""
    y = split.labels
    train, val, test = (split.rows(s) for s in ("train", "val", "test"))
    estimator = base_head(config)
    timings: dict = {}
    t0 = time.perf_counter()
    result = search(estimator, SEARCH_SPACES[config.head], X[train], y[train], X[val], y[val],
                    budget_s=config.search_budget_s, max_samples=config.search_max_samples, seed=config.seed)
    timings["search_s"] = round(time.perf_counter() - t0, 3)
    notes = [note for note in (result.skipped, result.cut_short_note("the hyper-parameter search")) if note]
    fit_rows = np.concatenate([train, val]) if config.refit_on_val else train
    t0 = time.perf_counter()
    head = clone(estimator).set_params(**result.best_params).fit(X[fit_rows], y[fit_rows])
    timings["fit_s"] = round(time.perf_counter() - t0, 3)
    novelty = NoveltyScorer(quantile=config.novelty_quantile, random_state=config.seed).fit(X[fit_rows])
    t0 = time.perf_counter()
    test_probs = head.predict_proba(X[test])
    test_eval = evaluate(y[test], test_probs, head.classes_, ids=[split.ids[i] for i in test],
                         n_bootstrap=config.bootstrap, seed=config.seed)
    timings["test_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    oof_probs, folds, oof_eval, oof_notes = fit_oof(clone(head), X, y, split, config, progress=oof_progress)
    timings["oof_s"] = round(time.perf_counter() - t0, 3)
    return ProbeFit(head=head, novelty=novelty, params=result.best_params, search=result, test=test_eval,
                    test_probs=test_probs, oof_probs=oof_probs, oof_folds=folds, oof=oof_eval,
                    notes=notes + oof_notes, timings=timings)


def train_probe(directory, X: np.ndarray, split: SplitResult, config: TrainConfig, progress) -> TrainOutcome:
    report, close = resolve_progress(progress, f"train {config.head}: cross-validation", unit="fold")
    try:
        fit = fit_probe(X, split, config, oof_progress=report)
    finally:
        close()
    artifacts.atomic_joblib(directory / "head.joblib", {"head": fit.head, "novelty": fit.novelty})
    return TrainOutcome(kind="probe", head_params=fit.params, test=fit.test, oof_probs=fit.oof_probs,
                        oof_folds=fit.oof_folds, oof=fit.oof, oof_model=f"{config.head} on {config.backbone} features",
                        search=fit.search.to_dict(), timings=fit.timings, notes=fit.notes, head=fit.head,
                        test_probs=fit.test_probs)
