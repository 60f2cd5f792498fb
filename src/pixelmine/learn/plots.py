"""PNG figures of an evaluation: the confusion matrix and the reliability diagram (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .metrics import Evaluation

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; skipping the PNG figures (pip install 'pixelmine[ml]')")
        return None
    return plt


def confusion_png(evaluation: Evaluation, path: Path, title: str = "Confusion matrix") -> Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    cm = np.asarray(evaluation.confusion)
    k = len(evaluation.classes)
    size = min(14.0, 2.5 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = cm.sum(axis=1, keepdims=True)
    shares = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), evaluation.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), evaluation.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {evaluation.n})")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reliability_png(evaluation: Evaluation, path: Path) -> Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    bins = [b for b in evaluation.reliability if b["count"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if bins:
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        width = bins[0]["high"] - bins[0]["low"]
        ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, alpha=0.7, label="accuracy in bin")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C1",
                label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE = {evaluation.metrics['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
