"""Labels from class names alone: ``pixelmine zero-shot --labels "cat,dog,car"``.

Every catalogued image with features gets a probability per label, in the text space of
:mod:`pixelmine.search.text`:

- **clip**: each label is embedded through prompt templates ("a photo of a {}.", ...) averaged, and the
  probabilities are the softmax of CLIP's logit scale times the cosine similarities (as in the CLIP paper);
- **imagenet-concepts** (offline): each label is matched to the ImageNet classes it stands for, an image's
  score for a label is its tag probability on those classes, and the scores are normalised over the labels
  (an image none of whose tags matches any label gets equal probabilities: it is uncertain, not guessed).

The result is a run (kind ``zero-shot``) with its predictions saved in ``zero-shot/run-<id>.npz``, measured
against the labels images already carry (accuracy, per-class recall, confusion matrix) when some do.
``as_labels`` records confident predictions of *unlabelled* images as label corrections (source
``zero-shot``); the ingested labels are never written, and a person's labels are never overridden.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_save_npz, atomic_write_json
from .metrics import Evaluation, evaluate

log = logging.getLogger(__name__)

# A few of the CLIP paper's ImageNet prompts: the ensemble beats the bare name by several points there.
DEFAULT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a blurry photo of a {}.",
                     "a good photo of a {}.", "a photo of one {}.", "a cropped photo of a {}.", "a picture of a {}.")
RESULT_DIR = "zero-shot"
MAX_LABELS = 1000


@dataclass
class ZeroShotResult:
    labels: list[str]
    method: str  # clip | imagenet-concepts
    backbone: str
    templates: list[str]
    ids: list[str]  # images predicted, in the row order of probs
    probs: np.ndarray  # (N, K) in labels order
    run_id: int | None = None
    evaluation: Evaluation | None = None  # against the labels images carry (those within ``labels``)
    pseudo_labels: int = 0  # corrections recorded by as_labels
    concepts: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # imagenet-concepts: per label
    notes: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> list[str]:
        return [self.labels[k] for k in np.argmax(self.probs, axis=1)] if len(self.ids) else []

    def counts(self) -> dict[str, int]:
        predicted = self.predicted
        return {label: predicted.count(label) for label in self.labels}

    def predictions(self, top_k: int = 3) -> list[dict]:
        order = np.argsort(-self.probs, axis=1)[:, :top_k]
        return [{"image_id": image_id, "label": self.labels[row[0]], "probability": float(self.probs[i, row[0]]),
                 "top_k": [{"label": self.labels[j], "probability": float(self.probs[i, j])} for j in row]}
                for i, (image_id, row) in enumerate(zip(self.ids, order))]

    def summary(self) -> dict:
        return {"labels": self.labels, "method": self.method, "backbone": self.backbone, "templates": self.templates,
                "images": len(self.ids), "counts": self.counts(), "run_id": self.run_id,
                "evaluation": self.evaluation.to_dict() if self.evaluation is not None else None,
                "pseudo_labels": self.pseudo_labels, "concepts": self.concepts, "notes": self.notes}


def parse_labels(labels) -> list[str]:
    """``"cat, dog,car"`` or a list -> ["cat", "dog", "car"]; InputError for an empty or repeated label."""
    items = labels.split(",") if isinstance(labels, str) else list(labels or [])
    cleaned = [str(item).strip() for item in items]
    if any(not item for item in cleaned):
        raise InputError(f"the label list {labels!r} has an empty label (two commas in a row, or a trailing comma); "
                         "give names separated by commas, e.g. --labels \"cat,dog,car\"")
    seen, repeated = set(), []
    for item in cleaned:
        if item.lower() in seen:
            repeated.append(item)
        seen.add(item.lower())
    if repeated:
        raise InputError(f"the label list repeats {', '.join(map(repr, repeated))}; give each label once")
    if len(cleaned) < 2:
        raise InputError(f"zero-shot labelling chooses between labels; give at least two, got {cleaned!r}")
    if len(cleaned) > MAX_LABELS:
        raise InputError(f"at most {MAX_LABELS} labels; got {len(cleaned)}")
    return cleaned


def _templates(templates) -> list[str]:
    chosen = list(templates) if templates else list(DEFAULT_TEMPLATES)
    bad = [t for t in chosen if "{}" not in t]
    if bad:
        raise InputError(f"a prompt template must hold {{}} where the label goes, e.g. \"a photo of a {{}}.\"; got "
                         f"{', '.join(map(repr, bad))}")
    return chosen


def label_probabilities(space, labels: list[str], templates: list[str]):
    """(probs (N, K), {label: matched ImageNet classes}) of the space's images for ``labels``."""
    from ..search.text import CLIP

    if space.method == CLIP:
        text = space.clip_text([t.format(label) for label in labels for t in templates])
        text = text.reshape(len(labels), len(templates), -1).mean(axis=1)
        text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        logits = space.logit_scale * space.image_vectors() @ text.T
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True), {}
    matches = space.concepts().match_many(labels)
    blind = [m for m in matches if not m.known]
    if blind:
        raise InputError("the offline labeller cannot see " + "; ".join(
            f"{m.query!r} (nearest ImageNet concepts: {', '.join(name for _, name, _ in m.top[:3])})" for m in blind)
            + ". Check the spelling, use a word for what is in the pictures, or use a CLIP backbone "
              "(pip install 'pixelmine[clip]', pixelmine extract --backbone clip:ViT-B-32/laion2b_s34b_b79k)")
    scores = space.concept_scores(np.stack([m.weights for m in matches]))
    # a little mass on every label: an image whose tags match no label is uncertain, not a division by zero
    scores = scores + 1e-6
    probs = scores / scores.sum(axis=1, keepdims=True)
    return probs, {m.query: [(name, round(float(sim), 4)) for _, name, sim in m.top[:3]] for m in matches}


def zero_shot(catalog, root, labels=None, *, from_labels: bool = False, backbone: str | None = None, templates=None,
              as_labels: bool = False, min_probability: float = 0.5, n_bootstrap: int = 1000) -> ZeroShotResult:
    """Predict every catalogued image among ``labels`` (a comma-separated string or a list; or, with
    ``from_labels``, the labels the images already carry) without training; see the module docstring."""
    from ..corrections import effective_labels, record_correction
    from ..search.text import open_text_space

    if (labels is None) == (not from_labels):
        raise InputError("give the labels (--labels \"cat,dog,car\") or take them from the images' own labels "
                         "(--labels-from-folders), one of the two")
    if not 0 <= min_probability <= 1:
        raise InputError(f"min_probability must be in [0, 1]; got {min_probability!r}")
    current = effective_labels(catalog)
    if from_labels:
        present = sorted({label for label in current.values() if label is not None})
        if len(present) < 2:
            raise InputError(f"the images carry {len(present)} distinct label(s); --labels-from-folders needs at least "
                             "two (ingest with --labels-from-folders or a manifest), or give --labels")
        labels = present
    labels = parse_labels(labels)
    templates = _templates(templates)
    space = open_text_space(root, backbone)
    config = {"labels": labels, "backbone": space.backbone, "method": space.method, "templates": templates,
              "as_labels": as_labels, "min_probability": min_probability}
    with catalog.run("zero-shot", config, inputs={"fingerprint": space.features.fingerprint}) as run:
        probs, concepts = label_probabilities(space, labels, templates)
        ids = list(space.features.ids)
        in_catalog = [k for k, image_id in enumerate(ids) if image_id in current]
        ids, probs = [ids[k] for k in in_catalog], probs[in_catalog]
        result = ZeroShotResult(labels, space.method, space.backbone, templates, ids, probs, run.id, concepts=concepts)
        known = [k for k, image_id in enumerate(ids) if current.get(image_id) in labels]
        others = sum(1 for image_id in ids if current.get(image_id) is not None and current[image_id] not in labels)
        if others:
            result.notes.append(f"{others} labelled images carry a label outside the list; they are predicted but not "
                                "measured")
        if known:
            result.evaluation = evaluate([current[ids[k]] for k in known], probs[known], labels,
                                         ids=[ids[k] for k in known], n_bootstrap=n_bootstrap)
        if as_labels:
            best = probs.argmax(axis=1)
            for k, image_id in enumerate(ids):
                if current.get(image_id) is None and probs[k, best[k]] >= min_probability:
                    record_correction(catalog, image_id, "relabel", labels[best[k]], source="zero-shot")
                    result.pseudo_labels += 1
            unlabelled = sum(1 for image_id in ids if current.get(image_id) is None)
            result.notes.append(f"{result.pseudo_labels} of {unlabelled} unlabelled images got a pseudo-label (top "
                                f"probability >= {min_probability}); recorded as corrections with source zero-shot, "
                                "the ingested labels are unchanged")
        _save(root, result)
        run.counts.update(images=len(ids), pseudo_labels=result.pseudo_labels)
        if result.evaluation is not None:
            run.metrics.update({k: result.evaluation.metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                               measured=result.evaluation.n)
    return result


def _save(root, result: ZeroShotResult) -> None:
    folder = Path(root) / RESULT_DIR
    atomic_save_npz(folder / f"run-{result.run_id}.npz", ids=np.asarray(result.ids, dtype="U64"),
                    probs=result.probs.astype(np.float32), labels=np.asarray(result.labels, dtype=str))
    atomic_write_json(folder / f"run-{result.run_id}.json", result.summary())


def load_zero_shot(root, run_id: int | None = None) -> ZeroShotResult | None:
    """A saved zero-shot result (the newest when ``run_id`` is None), or None."""
    folder = Path(root) / RESULT_DIR
    runs = sorted(folder.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1])) if folder.is_dir() else []
    if run_id is not None:
        runs = [p for p in runs if p.stem == f"run-{run_id}"]
    if not runs:
        return None
    summary = json.loads(runs[-1].read_text())
    with np.load(runs[-1].with_suffix(".npz"), allow_pickle=False) as data:
        ids, probs = data["ids"].tolist(), data["probs"]
    evaluation = Evaluation.from_dict(summary["evaluation"]) if summary.get("evaluation") else None
    return ZeroShotResult(summary["labels"], summary["method"], summary["backbone"], summary["templates"], ids, probs,
                          summary["run_id"], evaluation, summary.get("pseudo_labels", 0),
                          {k: [tuple(x) for x in v] for k, v in (summary.get("concepts") or {}).items()},
                          summary.get("notes", []))
