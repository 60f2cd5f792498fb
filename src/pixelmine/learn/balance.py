"""``pixelmine train --balance-groups COLUMN``: refit a probe's head with every group x class cell weighted
equally (last-layer retraining on a group-balanced set, the DFR recipe of Kirichenko et al. 2023).

A model that learned a shortcut (a tint, a camera, a site that goes with one class in the training data)
keeps its features; only the head is refitted, on the cached features, with the base model's head,
hyper-parameters, feature set and split. Each training image weighs N / (cells x n_cell), so each observed
(group, class) cell carries the same total weight and the shortcut no longer pays. The new model is
measured like any other (test split, out-of-fold probabilities) and ``balance.json`` holds every group
before and after, on the same test images, with the same bootstrap.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, replace

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_json
from .config import FEATURE_HEADS, TrainConfig

log = logging.getLogger(__name__)

RESULT_FILE = "balance.json"


def group_class_weights(labels, groups) -> np.ndarray:
    """Weight of each image so every observed (group, class) cell has the same total; mean weight 1."""
    keys = np.char.add(np.char.add(np.asarray(groups, dtype=str), "\x00"), np.asarray(labels, dtype=str))
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return len(keys) / (len(counts) * counts[inverse])


def base_model_for(catalog, root, name: str | None):
    """The probe model whose head is refitted: ``name``, else the newest ready probe model (None: none)."""
    from .artifacts import list_models
    from .loading import load_model

    if name is not None:
        return load_model(catalog, root, name)
    probes = [m for m in list_models(root) if m.get("status") == "ready" and m.get("kind") == "probe"
              and not m.get("balanced")]
    if not probes:
        return None
    newest = max(probes, key=lambda m: m.get("created_at") or "")
    return load_model(catalog, root, newest["name"])


def balanced_name(base_name: str, column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base_name}-balanced-{column}")[:100]


def train_balanced(catalog, root, base, column: str, *, name: str | None = None, progress=None):
    """Refit ``base``'s head group x class balanced on ``column``, writing the head and ``balance.json`` to the
    new model's folder; returns (folder, the config trained, features, split, outcome) for train.py to save."""
    from ..discover.groups import MISSING, check_column, group_values
    from ..trust.group_metrics import group_report
    from . import artifacts
    from .heads import create_head
    from .joined import load_feature_set
    from .metrics import evaluate
    from .novelty import NoveltyScorer
    from .oof import out_of_fold_probabilities
    from .outcome import TrainOutcome

    if base.kind != "probe" or base.head not in FEATURE_HEADS:
        raise InputError(f"--balance-groups refits the head of a model on cached features; model {base.name!r} is "
                         f"a {base.kind} {base.head} model. Give a probe model (--base NAME, e.g. one trained with "
                         "--head logreg or the default auto when it chose a probe)")
    started = time.perf_counter()
    saved = TrainConfig.from_mapping(base.config)
    config = replace(saved, head=base.head, backbone=base.backbone, name=name or balanced_name(base.name, column),
                     balance_groups=column, balance_base=base.name, class_weight=None)
    config.check()
    with np.load(base.dir / "data.npz", allow_pickle=False) as data:
        ids, splits, near_groups = data["ids"].tolist(), data["splits"].astype(str), data["groups"]
    current = {row["id"]: row for row in catalog.images(status="ok")}
    features = load_feature_set(root, base.backbone)
    have = set(features.ids)
    keep = [k for k, i in enumerate(ids) if i in current and current[i]["label"] in base.classes and i in have]
    if not keep:
        raise InputError(f"none of model {base.name!r}'s training images is still labelled in the workspace")
    rows = [current[ids[k]] for k in keep]
    check_column(rows, column)
    from ..progress import resolve_progress

    report, close = resolve_progress(progress, f"groups of {column}")
    try:
        groups = np.asarray(group_values(catalog, root, rows, column, progress=report))
    finally:
        close()
    y = np.asarray([r["label"] for r in rows])
    splits, near_groups = splits[keep], near_groups[keep]
    ids = [ids[k] for k in keep]
    X = np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)
    fit = np.flatnonzero(np.isin(splits, ("train", "val") if config.refit_on_val else ("train",)))
    test = np.flatnonzero(splits == "test")
    fit_groups = set(groups[fit].tolist())
    if len(fit_groups) < 2:
        (only,) = fit_groups
        raise InputError(f"the column {column!r} has one value ({only!r}) across the training images: there are no "
                         "groups to balance; choose a column whose values differ between images")
    weights = group_class_weights(y[fit], groups[fit])
    head = create_head(base.head, class_weight=None, standardize=config.standardize,
                       **({} if base.head == "knn" else {"random_state": config.seed}))
    head.set_params(**{k: v for k, v in (base.info.get("head_params") or {}).items() if k in head.get_params()})
    t0 = time.perf_counter()
    fitted = head.fit(X[fit], y[fit], sample_weight=weights)
    refit_s = time.perf_counter() - t0
    novelty = NoveltyScorer(quantile=config.novelty_quantile, random_state=config.seed).fit(X[fit])
    test_probs = fitted.predict_proba(X[test])
    test_eval = evaluate(y[test], test_probs, fitted.classes_, ids=[ids[i] for i in test],
                         n_bootstrap=config.bootstrap, seed=config.seed)
    all_weights = group_class_weights(y, groups)
    oof_probs, folds, notes = out_of_fold_probabilities(head, X, y, near_groups, n_splits=config.cv_folds,
                                                        seed=config.seed, sample_weight=all_weights)
    oof_eval = evaluate(y, oof_probs, np.unique(y), ids=ids, n_bootstrap=min(config.bootstrap, 200), seed=config.seed)

    base_rows, base_probs = base.test_probabilities()
    position = {r["id"]: k for k, r in enumerate(base_rows)}
    shared = [i for i in test if ids[i] in position]
    before_probs = base_probs[[position[ids[i]] for i in shared]]
    test_row = {int(i): k for k, i in enumerate(test)}
    after_probs = test_probs[[test_row[int(i)] for i in shared]]
    shared_labels, shared_groups = y[shared].tolist(), groups[shared].tolist()
    comparison = {}
    if len(set(shared_groups)) >= 2:
        for when, probs in (("before", before_probs), ("after", after_probs)):
            comparison[when] = group_report(column, shared_labels, probs, base.classes, shared_groups,
                                            n_bootstrap=config.bootstrap, seed=config.seed).to_dict()
    cells = []
    for g in sorted(fit_groups):
        for c in base.classes:
            inside = (groups[fit] == g) & (y[fit] == c)
            if inside.any():
                cells.append({"group": g, "class": c, "images": int(inside.sum()),
                              "weight": float(weights[inside][0])})
    balance = {"column": column, "base": base.name, "head": base.head, "backbone": base.backbone,
               "missing_group": MISSING in fit_groups, "cells": cells, "refit_s": round(refit_s, 3),
               "before_accuracy": float((np.argmax(before_probs, 1) ==
                                         np.searchsorted(base.classes, shared_labels)).mean()) if shared else None,
               "after_accuracy": test_eval.metrics["accuracy"], **comparison}
    empty = [f"{g}/{c}" for g in sorted(fit_groups) for c in base.classes
             if not ((groups[fit] == g) & (y[fit] == c)).any()]
    if empty:
        notes.append(f"{len(empty)} group x class cell(s) have no training image ({', '.join(empty[:6])}): balancing "
                     "cannot teach the model those; label some")
    outcome = TrainOutcome(kind="probe", head_params=dict(base.info.get("head_params") or {}), test=test_eval,
                           oof_probs=oof_probs, oof_folds=folds, oof=oof_eval,
                           oof_model=f"{base.head} on {base.backbone} features, group x class balanced on {column!r}",
                           timings={"refit_s": round(refit_s, 3), "total_s": round(time.perf_counter() - started, 3)},
                           notes=[f"head refitted with every {column!r} group x class cell weighted equally "
                                  f"(from model {base.name!r})"] + notes,
                           extra_info={"balanced": {"column": column, "base": base.name}})
    directory = artifacts.prepare_dir(root, config.model_name, keep_checkpoints=False)
    artifacts.atomic_joblib(directory / "head.joblib", {"head": fitted, "novelty": novelty})
    atomic_write_json(directory / RESULT_FILE, balance)
    from .data import SplitResult

    split = SplitResult(ids=ids, labels=y, splits=splits, groups=near_groups,
                        source=f"the split of model {base.name}", config=asdict(saved.split))
    return directory, config, features, split, outcome
