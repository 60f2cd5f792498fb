"""Prediction rows: label, probability, top-k, the ``uncertain`` flag and why; CSV and JSON output.

Also turns what the user typed (files, folders, globs) into a list of files; a path that does not exist
becomes an error row, so one bad argument never stops a batch.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class Prediction:
    path: str | None
    label: str | None = None  # top-1 class; None when the file could not be read
    probability: float | None = None  # top-1 probability
    top_k: list[dict] = field(default_factory=list)  # [{"label": ..., "probability": ...}, ...] best first
    uncertain: bool = True  # do not trust this prediction (see reason)
    reason: str | None = None  # why uncertain, or the error
    novelty: float | None = None  # distance to the training data / training threshold (> 1: unlike them)
    image_id: str | None = None  # sha256 of the file's bytes
    error: str | None = None  # set when the file could not be used; the rest of the batch goes on

    @property
    def ok(self) -> bool:
        return self.error is None


class Predictions(list):
    """A list of :class:`Prediction` with writers. ``errors`` counts the rows that failed."""

    @property
    def errors(self) -> int:
        return sum(1 for p in self if p.error)

    def to_records(self) -> list[dict]:
        return [asdict(p) for p in self]

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_records(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_csv(self, path: str | os.PathLike) -> None:
        k = max((len(p.top_k) for p in self), default=0)
        header = ["path", "label", "probability", "uncertain", "reason", "novelty", "image_id", "error"]
        for i in range(1, k + 1):
            header += [f"top{i}_label", f"top{i}_probability"]
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            for p in self:
                row = [p.path, p.label, _fmt(p.probability), int(p.uncertain), p.reason, _fmt(p.novelty),
                       p.image_id, p.error]
                for i in range(k):
                    item = p.top_k[i] if i < len(p.top_k) else {"label": None, "probability": None}
                    row += [item["label"], _fmt(item["probability"])]
                writer.writerow(["" if v is None else v for v in row])

    def write(self, path: str | os.PathLike) -> None:
        """CSV or JSON by the file's extension."""
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            self.to_json(path)
        elif suffix in (".csv", ".txt", ""):
            self.to_csv(path)
        else:
            raise InputError(f"cannot write predictions to {str(path)!r}: use a .csv or .json file name")


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def build_predictions(probs: np.ndarray, novelty: np.ndarray | None, classes: Sequence[str], *, top_k: int,
                      min_confidence: float, paths: Sequence[str | None], min_margin: float = 0.0,
                      image_ids: Sequence[str | None] | None = None) -> list[Prediction]:
    """Rows for successfully processed images (probs (N, K), novelty (N,) or None).

    Uncertain when the top-1 probability is below ``min_confidence``, when the top two are within
    ``min_margin`` of each other, or when the novelty ratio is above 1.
    """
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = []
    for i in range(len(probs)):
        best = int(order[i, 0])
        probability = float(probs[i, best])
        ratio = None if novelty is None else float(novelty[i])
        reasons = []
        if probability < min_confidence:
            reasons.append(f"low confidence ({probability:.2f} < {min_confidence:.2f})")
        elif probs.shape[1] > 1 and probability - float(probs[i, order[i, 1]]) < min_margin:
            runner_up = order[i, 1]
            reasons.append(f"low confidence: {classes[best]} ({probability:.2f}) and {classes[runner_up]} "
                           f"({float(probs[i, runner_up]):.2f}) are nearly tied")
        if ratio is not None and ratio > 1.0:
            reasons.append(f"unlike the training images (novelty {ratio:.2f} > 1)")
        rows.append(Prediction(path=paths[i], label=str(classes[best]), probability=probability,
                               top_k=[{"label": str(classes[j]), "probability": float(probs[i, j])}
                                      for j in order[i, :max(1, top_k)]],
                               uncertain=bool(reasons), reason="; ".join(reasons) or None, novelty=ratio,
                               image_id=None if image_ids is None else image_ids[i]))
    return rows


def error_prediction(path: str | None, message: str, image_id: str | None = None) -> Prediction:
    return Prediction(path=path, uncertain=True, reason=message, error=message, image_id=image_id)


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, error or None) per file, in the order given. Folders are walked (image extensions only), globs
    expanded; a path that matches nothing becomes an error entry."""
    from ..ingest.sources import walk_folder

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    entries: list[tuple[str, str | None]] = []
    for raw in inputs:
        text = os.path.expanduser(os.fspath(raw))
        if os.path.isdir(text):
            found = [item.path for item in walk_folder(text)]
            if not found:
                entries.append((os.path.abspath(text), "folder holds no image files"))
            entries.extend((path, None) for path in found)
        elif os.path.lexists(text):
            entries.append((os.path.abspath(text), None))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                entries.append((text, "no file matches this pattern"))
            for match in matches:
                if os.path.isdir(match):
                    entries.extend((item.path, None) for item in walk_folder(match))
                else:
                    entries.append((os.path.abspath(match), None))
        else:
            entries.append((os.path.abspath(text), "file not found; check the path"))
    if not entries:
        raise InputError("nothing to predict: give image files, folders or glob patterns")
    return entries
