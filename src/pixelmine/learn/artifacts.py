"""A trained model on disk: ``models/<name>/`` in the workspace.

    model.json            identity: name, kind (probe / finetune), head, backbone + feature fingerprint,
                          preprocessing, classes, uncertainty thresholds, data fingerprint, run id, version
    config.json           the resolved TrainConfig
    head.joblib           probes: {"head": fitted estimator, "novelty": NoveltyScorer}
    weights.pt            fine-tuned network (state dict) + its novelty scorer in novelty.joblib
    metrics.json          {"test": Evaluation, "oof": Evaluation, "search": ..., "split": ..., "timings": ...}
    confusion_matrix.png / .json, reliability.png
    oof.npz               out-of-fold probabilities of every labelled image: ids, labels, classes, probs,
                          folds, splits (read by the discovery stage for label errors)
    data.npz              ids, labels, splits the model was trained and tested on
    card.md               the model card
    checkpoints/          fine-tuning: one checkpoint per epoch (resume with --resume)

``model.json`` is written last: a folder without it is an unfinished training run. Loading needs only
these files (and the backbone's weights for prediction on new images), never the training data.
joblib files are pickles: load models only from workspaces you trust.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


from .._version import __version__
from ..errors import InputError, NotFittedError
from ..fileio import atomic_path, atomic_write_json

FORMAT_VERSION = 1
MODEL_FILE = "model.json"


def models_root(root: str | os.PathLike) -> Path:
    """``models/`` of the workspace at ``root``."""
    return Path(root) / "models"


def model_path(root: str | os.PathLike, name: str) -> Path:
    """``models/<name>/`` of the workspace at ``root``."""
    return models_root(root) / name


def atomic_joblib(path: Path, obj) -> None:
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(obj, tmp, compress=3)


def prepare_dir(root, name: str, *, keep_checkpoints: bool) -> Path:
    """An empty ``models/<name>/`` (an old model of that name is removed; its checkpoints kept on resume)."""
    directory = model_path(root, name)
    if directory.exists():
        for entry in directory.iterdir():
            if keep_checkpoints and entry.name == "checkpoints":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def read_info(directory: Path) -> dict:
    path = directory / MODEL_FILE
    if not path.exists():
        raise NotFittedError(f"{str(directory)!r} holds no finished model (no {MODEL_FILE}); train it with "
                             f"pixelmine train --name {directory.name}"
                             + (" --resume" if (directory / "checkpoints").is_dir() else ""))
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict) or not {"name", "kind", "classes"} <= set(info):
            raise ValueError("it lacks the model's name, kind or classes")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"the model file {str(path)!r} is damaged ({type(exc).__name__}: {exc}); the model "
                         f"cannot be used: train it again with pixelmine train --name {directory.name} (or "
                         "restore the folder from a backup)") from exc
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"model {directory.name!r} was saved by a newer pixelmine ({info.get('pixelmine_version')}); "
                         "upgrade pixelmine: pip install -U pixelmine")
    return info


def list_models(root) -> list[dict]:
    """Every model folder of the workspace: name, kind, head, backbone, classes, test metrics, created."""
    folder = models_root(root)
    out = []
    if not folder.is_dir():
        return out
    for directory in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (directory / MODEL_FILE).exists():
            out.append({"name": directory.name, "status": "unfinished",
                        "resumable": (directory / "checkpoints").is_dir()})
            continue
        info = json.loads((directory / MODEL_FILE).read_text())
        test = info.get("test_metrics", {})
        out.append({"name": directory.name, "status": "ready", "kind": info.get("kind"), "head": info.get("head"),
                    "backbone": info.get("backbone"), "classes": info.get("classes"),
                    "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
                    "n_test": info.get("n_test"), "created_at": info.get("created_at"), "run_id": info.get("run_id"),
                    "balanced": info.get("balanced")})
    return out


def default_model_name(root) -> str:
    """The most recently finished model (by creation time)."""
    ready = [m for m in list_models(root) if m["status"] == "ready"]
    if not ready:
        raise NotFittedError(f"no trained model in workspace {str(root)!r} yet; run: pixelmine train")
    return max(ready, key=lambda m: m["created_at"] or "")["name"]


def write_model_info(directory: Path, info: dict) -> None:
    info = {"format_version": FORMAT_VERSION, "pixelmine_version": __version__, **info}
    atomic_write_json(directory / MODEL_FILE, info)


def model_card(info: dict, metrics: dict, split: dict, config: dict) -> str:
    """The model card (markdown): what it is, what it was trained on, how well it does, how to use it."""
    test = metrics.get("test", {})
    headline = test.get("metrics", {})
    intervals = test.get("intervals", {})

    def metric(name: str) -> str:
        value = headline.get(name)
        if value is None:
            return "n/a"
        span = intervals.get(name)
        return f"{value:.3f} (95 % CI {span[0]:.3f}–{span[1]:.3f})" if span else f"{value:.3f}"

    lines = [
        f"# Model card: {info['name']}",
        "",
        f"- **Task**: image classification into {len(info['classes'])} classes: "
        + ", ".join(f"`{c}`" for c in info["classes"]),
        f"- **Kind**: {info['kind']} — "
        + ("a linear/kNN head on frozen features" if info["kind"] == "probe" else "a fine-tuned network"),
        f"- **Head**: {info['head']} with {json.dumps(info.get('head_params', {}))}",
        f"- **Backbone**: `{info['backbone']}` (feature fingerprint `{info.get('feature_fingerprint', '')[:12]}`)",
        f"- **Trained**: {info['created_at']} by pixelmine {info.get('pixelmine_version', __version__)}, "
        f"run {info.get('run_id')}",
        f"- **Data fingerprint**: `{info['data_fingerprint'][:16]}` (labelled image ids and labels)",
        "",
        "## Data",
        f"Split: {split.get('source')} — " + ", ".join(f"{k} {v}" for k, v in split.get("counts", {}).items())
        + ". Near-duplicates (feature cosine >= "
        + f"{split.get('config', {}).get('near_duplicate_cosine')}) are kept in one split: "
        + f"{split.get('grouped_images', 0)} images in near-duplicate groups.",
        "",
        "| class | train | val | test |",
        "|---|---:|---:|---:|",
    ]
    for label, row in split.get("by_class", {}).items():
        lines.append(f"| {label} | {row['train']} | {row['val']} | {row['test']} |")
    lines += [
        "",
        f"## Performance on the test split (n = {test.get('n', 0)})",
        f"- accuracy: {metric('accuracy')}",
        f"- balanced accuracy: {metric('balanced_accuracy')}",
        f"- macro-F1: {metric('macro_f1')}",
        f"- expected calibration error: {headline.get('ece', float('nan')):.3f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in test.get("per_class", []):
        lines.append(f"| {row['class']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
                     f"{row['support']} |")
    oof = metrics.get("oof", {}).get("metrics", {})
    if oof:
        lines += ["", f"Cross-validated ({config.get('cv_folds')} folds, all labelled images, "
                      f"{metrics.get('oof_model', 'same head')}): accuracy {oof['accuracy']:.3f}, "
                      f"macro-F1 {oof['macro_f1']:.3f}."]
    selection = metrics.get("selection")
    if selection:
        lines += ["", "## How this model was chosen",
                  f"Automatic selection (`--head auto`) in {selection['elapsed_s']:.0f} s of a "
                  f"{selection['budget_s']:.0f} s budget: each candidate scored by {config.get('cv_folds')}-fold "
                  "cross-validation on train + val, folds grouped by near-duplicate group; the test split was not "
                  f"used. Chosen: **{selection['chosen']['head']} on `{selection['chosen']['features']}`**.", "",
                  "| candidate | rung | images | CV balanced accuracy | ± (folds) | seconds | status |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for t in selection["leaderboard"]:
            lines.append(f"| {t['candidate'] if t['head'] != '*' else 'features ' + t['features']} | {t['rung']} | "
                         f"{t['n_images']} | {'' if t['score'] is None else format(t['score'], '.3f')} | "
                         f"{'' if t['spread'] is None else format(t['spread'], '.3f')} | {t['seconds']:.1f} | "
                         f"{t['status'] if t['status'] == 'scored' else t['status'] + ': ' + str(t['reason'])} |")
        lines += [f"- {note}" for note in selection.get("notes", [])]
    cleaning = metrics.get("cleaning")
    if cleaning:
        lines += ["", "## How the training data was cleaned",
                  "`--clean`: " + (", ".join(f"{n} {k.replace('_', ' ')}s" for k, n in cleaning["counts"].items())
                                   or "nothing") + " left out of train and val (the test split is untouched; the list "
                  "is in `cleaning.json`). Corrections in effect: "
                  + (", ".join(f"{n} {a}" for a, n in cleaning.get("corrections", {}).items()) or "none") + "."]
        if cleaning.get("before"):
            paired = cleaning["paired_accuracy_difference"]
            lines += ["", "| test metric | before (same head, uncleaned data) | after |", "|---|---:|---:|"]
            for name in ("accuracy", "balanced_accuracy", "macro_f1"):
                cells = []
                for when in ("before", "after"):
                    value, span = cleaning[when]["metrics"][name], cleaning[when]["intervals"].get(name)
                    cells.append(f"{value:.3f}" + (f" ({span[0]:.3f}–{span[1]:.3f})" if span else ""))
                lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
            if paired.get("difference") is not None:
                lines.append(f"\nAccuracy {paired['difference']:+.3f} (paired bootstrap 95 % CI "
                             f"{paired['interval'][0]:+.3f} to {paired['interval'][1]:+.3f}) on the same "
                             f"{paired['n']} test images.")
    lines += [
        "",
        "## Use and limits",
        f"- A prediction is flagged `uncertain` when its top-1 probability is below "
        f"{info['uncertainty']['min_confidence']:.2f}, when its top two classes are within "
        f"{info['uncertainty'].get('min_margin', 0):.2f} of each other, or when the image is farther from the "
        "training images "
        f"than {info['uncertainty']['novelty_quantile']:.0%} of them are from each other (novelty > 1).",
        "- It only knows the classes above; any other image still gets one of them (check `uncertain`).",
        "- Scores hold for images like the training data (same camera, lighting, preprocessing).",
        "",
        "## How to use",
        "```bash",
        f"pixelmine predict photos/ --model {info['name']} --top-k 3 --output predictions.csv",
        f"pixelmine evaluate --model {info['name']}",
        "```",
        "```python",
        "import pixelmine",
        "ws = pixelmine.open_workspace('…')",
        f"model = ws.model({info['name']!r})",
        "predictions = model.predict(['photo.jpg'])",
        "```",
    ]
    return "\n".join(lines) + "\n"
