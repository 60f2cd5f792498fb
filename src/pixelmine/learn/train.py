"""`pixelmine train`: labelled images -> split -> head or fine-tuned network -> measured, saved model.

Every training is a run in the catalog (kind ``train``) with its resolved config and headline metrics.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..catalog import utc_now
from ..errors import InputError
from . import artifacts
from .config import TrainConfig
from .data import SplitResult, data_fingerprint, ensure_splits, labelled_images
from .outcome import TrainOutcome
from ..fileio import atomic_save_npz, atomic_write_json, atomic_write_text
from ..runs import image_set
from .joined import is_joined
from .joined import sources as joined_sources

log = logging.getLogger(__name__)


def default_min_confidence(n_classes: int) -> float:
    """Top-1 probability below which a prediction is uncertain: 0.5 (more likely wrong than right, for
    calibrated probabilities), raised to 1/K + 0.1 when that is higher (two classes: 0.6)."""
    return max(0.5, 1.0 / n_classes + 0.1)


def train(catalog, root, config: TrainConfig | None = None, *, extract=None, discover=None, resplit: bool = False,
          resume: bool = False, progress="auto", on_epoch=None, **overrides):
    """Train, evaluate and save a model of the workspace at ``root``; returns the loaded
    :class:`~pixelmine.learn.model.Model`. ``extract(backbone, progress=...)`` computes missing features
    first (``Workspace.train`` passes ``Workspace.extract``); ``discover(only=..., progress=...)`` finds
    copies and label issues for ``clean=True`` when no discover run has (``Workspace.discover``).

    ``overrides`` are TrainConfig fields (``head="svm"``, ``name="best"``, ``split={"seed": 1}``, ...).
    ``resplit`` recomputes the stored split; ``resume`` continues an interrupted fine-tuning;
    ``on_epoch(record)`` receives each fine-tuning epoch's losses and accuracies.
    """
    from .loading import open_model

    if config is None or overrides:
        base = config.to_dict() if config is not None else {}
        config = TrainConfig.from_mapping(base, **overrides)
    config.check()
    if config.balance_groups:
        return _train_balanced(catalog, root, config, extract=extract, discover=discover, resplit=resplit,
                               progress=progress)
    started = time.perf_counter()
    with catalog.run("train", {**config.to_dict(), "resplit": resplit, "resume": resume}) as run:
        data = labelled_images(catalog, exclude_classes=config.exclude_classes)
        from .inputs import features_for

        features, data, notes = features_for(root, config.backbone, data, extract=extract, progress=progress)
        X = np.asarray(features.vectors[features.rows(data.ids)], dtype=np.float32)
        run.inputs.update(fingerprint=features.fingerprint, images=image_set(data.ids))
        split = ensure_splits(catalog, data, config.split, X, resplit=resplit)
        if not (split.splits == "test").any():
            raise InputError(f"the test split is empty ({len(split.ids)} labelled images, split {split.source}); "
                             "a model must be measured on images it did not learn from: label more images, "
                             "raise split.test, or give test images in your split column")
        split_before = split
        plan = None
        if config.clean:
            from .clean import apply_plan, plan_for_training

            plan = plan_for_training(catalog, data, split, config, discover=discover, progress=progress)
            split = apply_plan(split, plan)
        directory = artifacts.prepare_dir(root, config.model_name, keep_checkpoints=resume)
        chosen = config
        if config.head == "auto":
            from .selection import train_auto

            outcome, chosen, features, split = train_auto(catalog, root, directory, data, split, config,
                                                          extract=extract, progress=progress, on_epoch=on_epoch)
        elif config.head == "finetune":
            from .finetune import train_finetune

            outcome = train_finetune(root, directory, data, split, X, config, resume=resume, progress=progress,
                                     on_epoch=on_epoch)
        else:
            from .probe import train_probe

            outcome = train_probe(directory, X, split, config, progress)
        if plan is not None:
            from .clean import cleaning_report

            outcome.cleaning = cleaning_report(root, plan, outcome, features, split_before, split, chosen)
            if outcome.cleaning.get("note"):
                outcome.notes.append(outcome.cleaning["note"])
        outcome.notes[:0] = notes + split.notes
        outcome.timings["total_s"] = round(time.perf_counter() - started, 3)
        save_model(root, directory, chosen, features, split, outcome, run.id, saved_config=config)
        run.counts.update({s: int((split.splits == s).sum()) for s in ("train", "val", "test")})
        run.metrics.update({k: outcome.test.metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                           model=config.model_name, head=chosen.head, backbone=chosen.backbone)
        if outcome.selection is not None:
            run.metrics["selection"] = outcome.selection
        if outcome.cleaning is not None:
            run.metrics["cleaning"] = {k: v for k, v in outcome.cleaning.items() if k != "left_out"}
    return open_model(catalog, root, directory)


def _train_balanced(catalog, root, config: TrainConfig, *, extract, discover, resplit, progress):
    """Refit the head of ``config.balance_base`` (default: the newest probe model, trained first when there is
    none) group x class balanced on ``config.balance_groups``; see :mod:`.balance`."""
    from dataclasses import replace

    from .balance import base_model_for, train_balanced
    from .loading import open_model

    base = base_model_for(catalog, root, config.balance_base)
    if base is None:
        base = train(catalog, root, replace(config, balance_groups=None, balance_base=None, name=None),
                     extract=extract, discover=discover, resplit=resplit, progress=progress)
    with catalog.run("train", config.to_dict(), inputs={"model": base.name}) as run:
        directory, trained, features, split, outcome = train_balanced(catalog, root, base, config.balance_groups,
                                                                      name=config.name, progress=progress)
        save_model(root, directory, trained, features, split, outcome, run.id, saved_config=trained)
        model = open_model(catalog, root, directory)
        run.metrics.update({k: model.info["test_metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                           model=model.name, head=model.head, backbone=model.backbone, base=base.name,
                           balance_groups=config.balance_groups)
    return model


def save_model(root, directory, config: TrainConfig, features, split: SplitResult, outcome: TrainOutcome, run_id: int, *,
          saved_config: TrainConfig) -> None:
    """Write the model folder. ``config`` is what was trained (for ``auto``: the chosen head and features),
    ``saved_config`` what was asked for (config.json)."""
    from .plots import confusion_png, reliability_png

    classes = outcome.test.classes
    ids = np.asarray(split.ids, dtype="U64")
    atomic_save_npz(directory / "oof.npz", ids=ids, labels=split.labels.astype(str),
                           classes=np.asarray(classes, dtype=str), probs=outcome.oof_probs.astype(np.float32),
                           folds=outcome.oof_folds, splits=split.splits.astype(str))
    atomic_save_npz(directory / "data.npz", ids=ids, labels=split.labels.astype(str),
                           splits=split.splits.astype(str), groups=split.groups)
    metrics = {"test": outcome.test.to_dict(), "oof": outcome.oof.to_dict(), "oof_model": outcome.oof_model,
               "search": outcome.search, "selection": outcome.selection,
               "cleaning": ({k: v for k, v in outcome.cleaning.items() if k != "left_out"}
                            if outcome.cleaning is not None else None), "split": split.summary(),
               "timings": outcome.timings, "notes": outcome.notes}
    atomic_write_json(directory / "metrics.json", metrics)
    atomic_write_json(directory / "confusion_matrix.json",
                                {"classes": classes, "rows": "true", "columns": "predicted",
                                 "matrix": outcome.test.confusion})
    confusion_png(outcome.test, directory / "confusion_matrix.png", title=f"{config.model_name}: test")
    reliability_png(outcome.test, directory / "reliability.png")
    atomic_write_json(directory / "config.json", saved_config.to_dict())
    if outcome.cleaning is not None:
        atomic_write_json(directory / "cleaning.json", outcome.cleaning)
    info = {
        "name": config.model_name,
        "kind": outcome.kind,
        "head": config.head,
        "head_params": outcome.head_params,
        "backbone": config.backbone,
        "feature_fingerprint": features.fingerprint,
        **({"feature_sources": joined_sources(root, config.backbone)}
           if is_joined(config.backbone) else {}),
        "selected_by": "auto" if saved_config.head == "auto" else "user",
        "classes": classes,
        "uncertainty": {"min_confidence": (config.min_confidence if config.min_confidence is not None
                                           else default_min_confidence(len(classes))),
                        "min_margin": config.min_margin, "novelty_quantile": config.novelty_quantile},
        "data_fingerprint": data_fingerprint(split.ids, split.labels, extra=features.fingerprint),
        "n_train": int((split.splits == "train").sum()), "n_val": int((split.splits == "val").sum()),
        "n_test": int((split.splits == "test").sum()),
        "test_metrics": {k: outcome.test.metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
        "run_id": run_id,
        "created_at": utc_now(),
        **outcome.extra_info,
    }
    atomic_write_text(directory / "card.md", artifacts.model_card(info, metrics, split.summary(),
                                                                 saved_config.to_dict()))
    artifacts.write_model_info(directory, info)  # last: its presence marks the model as finished
