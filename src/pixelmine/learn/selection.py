"""``head="auto"``: run the search of :mod:`.auto`, then train the winner exactly as an explicit head would
be trained (hyper-parameters on val, refit on train + val, measured once on the test split)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace

import numpy as np

from .auto import Trial, select
from .candidates import candidate_feature_sets

log = logging.getLogger(__name__)


def train_auto(catalog, root, directory, data, split, config, *, extract=None, progress="auto", on_epoch=None):
    """(outcome, the config that was trained, its FeatureSet, the split) for ``config.head == "auto"``."""
    from .inputs import features_for
    from .probe import train_probe

    auto = config.auto
    feature_sets, notes = candidate_feature_sets(catalog, root, config.backbone, auto.backbones,
                                                 user_named=auto.extra_backbones, full_frame=auto.full_frame,
                                                 max_side=auto.max_full_frame)
    selection = select(root, split, config, feature_sets=feature_sets, extract=extract, progress=progress,
                       notes=notes)
    chosen = replace(config, name=config.model_name, head=selection.head, backbone=selection.features)
    outcome = None
    if selection.finetune and selection.finetune["affordable"]:
        outcome, chosen = _try_finetune(root, directory, data, split, config, chosen, selection, extract=extract,
                                        progress=progress, on_epoch=on_epoch)
    features, data_chosen, feature_notes = features_for(root, chosen.backbone, data, extract=extract, progress=progress)
    split = _restricted(split, data_chosen.ids)
    if outcome is None:
        left = max(0.0, auto.budget_s - selection.elapsed_s)
        chosen = replace(chosen, search_budget_s=min(config.search_budget_s, left))
        X = np.asarray(features.vectors[features.rows(split.ids)], dtype=np.float32)
        outcome = train_probe(directory, X, split, chosen, progress)
    outcome.selection = selection.to_dict()
    outcome.notes[:0] = selection.notes + feature_notes
    return outcome, chosen, features, split


def _restricted(split, ids: list[str]):
    """``split`` restricted to ``ids`` (images the chosen features could not be computed for are left out)."""
    if list(split.ids) == list(ids):
        return split
    keep = np.isin(np.asarray(split.ids), np.asarray(ids))
    return replace(split, ids=[i for i, k in zip(split.ids, keep) if k], labels=split.labels[keep],
                   splits=split.splits[keep], groups=split.groups[keep])


def _try_finetune(root, directory, data, split, config, chosen, selection, *, extract, progress, on_epoch):
    """Fine-tune the best single feature set's network; keep it when its val accuracy beats the chosen
    probe's (fitted on train, scored on val). Returns (outcome or None, the config that won)."""
    from .finetune import train_finetune
    from .probe import base_head
    from .inputs import features_for

    backbone = selection.finetune["backbone"]
    ft_config = replace(config, name=config.model_name, head="finetune", backbone=backbone)
    features, _, _ = features_for(root, backbone, data, extract=extract, progress=progress)
    X = np.asarray(features.vectors[features.rows(split.ids)], dtype=np.float32)
    t0 = time.perf_counter()
    outcome = train_finetune(root, directory, data, split, X, ft_config, progress=progress, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    history = outcome.extra_info.get("history") or []
    best_epoch = outcome.timings.get("best_epoch")
    val_scores = [r["val_accuracy"] for r in history if r.get("epoch") == best_epoch and r.get("val_accuracy") is not None]
    ft_val = float(val_scores[-1]) if val_scores else None
    # the chosen probe, fitted on train only and scored on the same val images
    probe_features, _, _ = features_for(root, chosen.backbone, data, extract=extract, progress=False)
    rows = {i: r for r, i in enumerate(probe_features.ids)}
    train, val = split.rows("train"), split.rows("val")
    train = np.asarray([r for r in train if split.ids[r] in rows])
    val = np.asarray([r for r in val if split.ids[r] in rows])
    Xp = np.asarray(probe_features.vectors[[rows[split.ids[r]] for r in np.concatenate([train, val])]],
                    dtype=np.float32)
    head = base_head(chosen).fit(Xp[:len(train)], split.labels[train])
    probe_val = float((head.predict(Xp[len(train):]) == split.labels[val]).mean()) if len(val) else None
    selection.trials.append(Trial(backbone, "finetune", "finetune", len(split.rows("train")), score=ft_val,
                                  seconds=seconds, params={"probe_val_accuracy": probe_val}))
    selection.finetune.update(val_accuracy=ft_val, probe_val_accuracy=probe_val, seconds=round(seconds, 1))
    if ft_val is not None and (probe_val is None or ft_val > probe_val):
        selection.features, selection.head = backbone, "finetune"
        selection.notes.append(f"fine-tuning {backbone} won on the val split: accuracy {ft_val:.3f} against "
                               f"{probe_val:.3f} for {chosen.head} on {chosen.backbone}")
        return outcome, ft_config
    selection.notes.append(f"fine-tuning {backbone} was tried and lost on the val split: accuracy "
                           f"{ft_val if ft_val is not None else float('nan'):.3f} against {probe_val:.3f} for "
                           f"{chosen.head} on {chosen.backbone}; the probe is kept")
    for leftover in ("weights.pt", "novelty.joblib", "history.json", "checkpoints"):
        path = directory / leftover
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    return None, chosen
