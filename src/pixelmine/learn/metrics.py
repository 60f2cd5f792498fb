"""Evaluation of predicted probabilities against true labels: one function, one result object.

Point metrics come from scikit-learn (so they match it exactly); what is pixelmine's own is the bootstrap
(95 % intervals for the headline metrics, resampling images with replacement), the calibration summary
(expected calibration error over equal-width confidence bins) and the list of the most confident mistakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn import metrics as skm

from ..errors import InputError

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass
class Evaluation:
    """Metrics of one set of predictions. ``to_dict()`` is what metrics.json holds."""

    n: int
    classes: list[str]
    metrics: dict  # accuracy, balanced_accuracy, macro/weighted precision/recall/f1, top_k, log_loss, ece
    intervals: dict  # metric -> [low, high], bootstrap 95 % (percentile); empty when n_bootstrap = 0
    per_class: list[dict]  # class, precision, recall, f1, support
    confusion: list[list[int]]  # confusion[i][j]: images of class i predicted as class j
    reliability: list[dict]  # bins of top-1 confidence: low, high, count, confidence, accuracy
    mistakes: list[dict] = field(default_factory=list)  # most confident wrong predictions, worst first
    n_bootstrap: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Evaluation":
        return cls(**data)

    def table(self) -> str:
        """A plain-text summary: headline metrics with intervals, then per-class rows."""
        lines = [f"n = {self.n} images, {len(self.classes)} classes"]
        for name in (*HEADLINE, "weighted_f1", "log_loss", "ece"):
            value = self.metrics.get(name)
            if value is None:
                continue
            interval = self.intervals.get(name)
            span = f"  [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            lines.append(f"  {name:<18} {value:.3f}{span}")
        for k, value in sorted(self.metrics.get("top_k", {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"  {'top-' + str(k) + ' accuracy':<18} {value:.3f}")
        width = max(len("class"), *(len(c) for c in self.classes))
        lines.append("")
        lines.append(f"  {'class':<{width}}  precision  recall     f1  support")
        for row in self.per_class:
            lines.append(f"  {row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
                         f"{row['f1']:5.3f}  {row['support']:7d}")
        return "\n".join(lines)


def label_indices(labels: Sequence[str], classes: Sequence[str], *, what: str = "labels") -> np.ndarray:
    """Class index of each label; InputError naming any label that is not one of ``classes``."""
    position = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(label) for label in labels if label not in position})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(f"{what} include classes the model was not trained on: {shown}; the model knows "
                         f"{', '.join(map(repr, classes))}. Retrain (pixelmine train) to include them, or leave "
                         "those images out of the evaluation")
    return np.fromiter((position[label] for label in labels), dtype=np.int64, count=len(labels))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15):
    """(ECE, bins): weighted mean |accuracy - confidence| over equal-width bins of top-1 confidence."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else None
        acc = float(correct[mask].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(acc - conf)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": conf, "accuracy": acc})
    return float(ece), bins


def _scores_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-resample accuracy, balanced accuracy, macro-F1 from a stack of confusion matrices (B, K, K).

    Matches sklearn's definitions: recall/precision of a class with no true / no predicted images is 0, and
    macro averages run over the classes present among the true or the predicted labels of that resample.
    """
    diag = np.einsum("bii->bi", cm).astype(float)
    true_n = cm.sum(axis=2).astype(float)
    pred_n = cm.sum(axis=1).astype(float)
    total = true_n.sum(axis=1)
    accuracy = diag.sum(axis=1) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true_n > 0, diag / true_n, 0.0)
        precision = np.where(pred_n > 0, diag / pred_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present_true = true_n > 0
    balanced = (recall * present_true).sum(axis=1) / present_true.sum(axis=1)
    present = present_true | (pred_n > 0)
    macro_f1 = (f1 * present).sum(axis=1) / present.sum(axis=1)
    return accuracy, balanced, macro_f1


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, n_bootstrap: int = 1000,
                        seed: int = 0, level: float = 0.95, chunk: int = 100) -> dict:
    """Percentile bootstrap intervals of accuracy, balanced accuracy and macro-F1 (images resampled)."""
    n = len(y_true)
    if n_bootstrap <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    codes = y_true * n_classes + y_pred
    k2 = n_classes * n_classes
    results = {name: [] for name in HEADLINE}
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = codes[rng.integers(0, n, size=(b, n))] + (np.arange(b) * k2)[:, None]
        cm = np.bincount(draws.ravel(), minlength=b * k2).reshape(b, n_classes, n_classes)
        for name, values in zip(HEADLINE, _scores_from_confusion(cm)):
            results[name].append(values)
    tail = (1 - level) / 2 * 100
    return {name: [float(np.percentile(np.concatenate(v), tail)), float(np.percentile(np.concatenate(v), 100 - tail))]
            for name, v in results.items()}


def evaluate(y_true: Sequence[str], probs: np.ndarray, classes: Sequence[str], *, ids: Sequence[str] | None = None,
             n_bootstrap: int = 1000, seed: int = 0, n_mistakes: int = 20, n_bins: int = 15) -> Evaluation:
    """Evaluate probabilities ``probs`` (N, K; columns in ``classes`` order) against labels ``y_true``."""
    classes = [str(c) for c in classes]
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or probs.shape[0] != len(y_true):
        raise InputError(f"probs must have shape (n_images, n_classes) = ({len(y_true)}, {len(classes)}); "
                         f"got {probs.shape}")
    if len(y_true) == 0:
        raise InputError("there are no labelled images to evaluate on; label images (pixelmine ingest "
                         "--labels-from-folders or a manifest) and give the test split some")
    sums = probs.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums - 1) > 1e-3):
        raise InputError("each row of probs must sum to 1 (probabilities over the classes); got row sums from "
                         f"{sums.min():.4f} to {sums.max():.4f}")
    probs = probs / sums  # float32 rounding: sklearn's log loss checks the sums at float64 precision
    truth = label_indices(list(y_true), classes)
    predicted = np.argmax(probs, axis=1)
    labels = np.arange(len(classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0)
    confidence = probs[np.arange(len(truth)), predicted]
    ece, bins = expected_calibration_error(confidence, predicted == truth, n_bins)
    values = {
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(truth, predicted)),
        "macro_precision": float(skm.precision_score(truth, predicted, average="macro", zero_division=0)),
        "macro_recall": float(skm.recall_score(truth, predicted, average="macro", zero_division=0)),
        "macro_f1": float(skm.f1_score(truth, predicted, average="macro", zero_division=0)),
        "weighted_precision": float(skm.precision_score(truth, predicted, average="weighted", zero_division=0)),
        "weighted_recall": float(skm.recall_score(truth, predicted, average="weighted", zero_division=0)),
        "weighted_f1": float(skm.f1_score(truth, predicted, average="weighted", zero_division=0)),
        "log_loss": float(skm.log_loss(truth, np.clip(probs, 1e-15, 1), labels=labels)),
        "ece": ece,
        "top_k": {str(k): float(skm.top_k_accuracy_score(truth, probs, k=k, labels=labels))
                  for k in (2, 3, 5) if k < len(classes)},
    }
    per_class = [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support)]
    confusion = skm.confusion_matrix(truth, predicted, labels=labels)
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n_mistakes]
    mistakes = [{"id": None if ids is None else ids[i], "true": classes[truth[i]], "predicted": classes[predicted[i]],
                 "probability": float(confidence[i]), "probability_of_true": float(probs[i, truth[i]])}
                for i in worst]
    intervals = bootstrap_intervals(truth, predicted, len(classes), n_bootstrap=n_bootstrap, seed=seed)
    return Evaluation(n=len(truth), classes=classes, metrics=values, intervals=intervals, per_class=per_class,
                      confusion=confusion.tolist(), reliability=bins, mistakes=mistakes, n_bootstrap=n_bootstrap)
