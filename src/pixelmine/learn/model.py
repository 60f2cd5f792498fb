"""A trained model in ``models/<name>/``: predict on image files, evaluate, read its OOF probabilities.

    model = ws.model("logreg-mobilenet_v2")         # or pixelmine.load_model(ws, name)
    model.predict(["new/photo.jpg", "more/"])       # Predictions (label, probability, top-k, uncertain)
    model.evaluate()                                # Evaluation on its test split, with today's labels
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFittedError
from . import artifacts
from .metrics import Evaluation, evaluate, label_indices
from .predictions import Predictions, build_predictions, error_prediction, expand_inputs
from ..fileio import atomic_write_json

log = logging.getLogger(__name__)


class Model:
    """A finished model folder. Loading reads only that folder (never the training data).

    The base of :class:`~.probe_model.ProbeModel` (a head on cached backbone features) and
    :class:`~.finetuned_model.FinetunedModel` (a fine-tuned network); :func:`~.loading.load_model` picks
    the class from ``model.json``. Each says how files become probabilities; everything else is shared.
    """

    def __init__(self, catalog, root: str | Path, directory: str | Path):
        self.catalog = catalog  # the workspace's Catalog: evaluation runs, the current labels of the test split
        self.root = Path(root)  # the workspace directory: feature caches, the model:NAME backbone
        self.dir = Path(directory)
        self.info = artifacts.read_info(self.dir)
        self.name: str = self.info["name"]
        self.kind: str = self.info["kind"]
        self.head: str = self.info["head"]
        self.backbone: str = self.info["backbone"]
        self.classes: list[str] = list(self.info["classes"])
        self.min_confidence: float = float(self.info["uncertainty"]["min_confidence"])
        self.min_margin: float = float(self.info["uncertainty"].get("min_margin", 0.0))

    def __repr__(self) -> str:
        acc = self.info.get("test_metrics", {}).get("accuracy")
        return (f"Model({self.name!r}, {self.kind} {self.head} on {self.backbone}, {len(self.classes)} classes"
                + (f", test accuracy {acc:.3f})" if acc is not None else ")"))

    # -- stored results -----------------------------------------------------------------------------
    @property
    def metrics(self) -> dict:
        """metrics.json: test evaluation, out-of-fold evaluation, search trials, split, timings."""
        return json.loads((self.dir / "metrics.json").read_text())

    @property
    def config(self) -> dict:
        return json.loads((self.dir / "config.json").read_text())

    @property
    def card(self) -> str:
        return (self.dir / "card.md").read_text()

    def is_current(self) -> bool:
        """True when the workspace's labelled images, their labels and the backbone's features are exactly
        those the model was trained on (so training again would learn nothing new)."""
        from .data import data_fingerprint, labelled_images
        from .joined import load_feature_set

        try:
            data = labelled_images(self.catalog, exclude_classes=self.config.get("exclude_classes") or ())
            features = load_feature_set(self.root, self.backbone)
        except (InputError, NotFittedError):
            return False
        have = set(features.ids)
        keep = [k for k, i in enumerate(data.ids) if i in have]
        fingerprint = data_fingerprint([data.ids[k] for k in keep], data.labels[keep], extra=features.fingerprint)
        return fingerprint == self.info["data_fingerprint"]

    @property
    def balance(self) -> dict | None:
        """For a model refitted with ``--balance-groups``: the column, the base model, the group x class cells
        and their weights, and every group before and after (``balance.json``); None otherwise."""
        path = self.dir / "balance.json"
        return json.loads(path.read_text()) if path.exists() else None

    def fairness(self, by=None, *, min_group: int = 20, n_bootstrap: int = 1000, progress=False):
        """Test-split metrics per group of each column of ``by`` (None: every column that varies), with the
        gaps between groups; see :mod:`pixelmine.trust.fairness`."""
        from ..trust.fairness import assess_fairness

        return assess_fairness(self.catalog, self.root, self, by, min_group=min_group, n_bootstrap=n_bootstrap,
                               progress=progress)

    def test_evaluation(self) -> Evaluation:
        return Evaluation.from_dict(self.metrics["test"])

    def oof(self) -> dict:
        """Out-of-fold probabilities of every labelled image at training time: ids, labels, classes, probs
        (N, K), folds, splits. This is what the discovery stage reads to find label errors."""
        with np.load(self.dir / "oof.npz", allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    # -- computing: each kind of model says how image files become class probabilities ----------------
    def embedder(self, *, threads: int | None = None):
        """A resident :class:`~pixelmine.features.embedder.Embedder` for this model's network (the caller
        closes it); the server keeps one per prediction thread."""
        raise NotImplementedError

    def probabilities(self, embedder, files: list[str], *, progress=False):
        """(probs (n, K), novelty (n,), rows, {row: error}) for image ``files`` through ``embedder``."""
        raise NotImplementedError

    def _test_probabilities(self, rows: list[dict], progress) -> np.ndarray:
        """Probabilities of the model's current test images (catalog rows), for :meth:`evaluate`."""
        probs, _, ok, errors = self._embed_rows([r["path"] for r in rows], list(range(len(rows))), {}, progress)
        if errors:
            first = min(errors)
            raise InputError(f"{len(errors)} test images could not be read, e.g. {rows[first]['path']!r}: "
                             f"{errors[first]}")
        return probs

    def _probabilities_for_files(self, files: list[str], image_ids: list[str | None], progress):
        """(probs, novelty, ok rows, {row: error}) for readable files."""
        errors: dict[int, str] = {r: "the file cannot be read" for r, i in enumerate(image_ids) if i is None}
        todo = [r for r in range(len(files)) if image_ids[r] is not None]
        return self._embed_rows(files, todo, errors, progress)

    def _embed_rows(self, files, todo: list[int], errors: dict[int, str], progress, known=None):
        """Embed ``files[todo]`` (plus ``known`` {row: probability row, novelty} already computed)."""
        probs_by_row: dict[int, tuple[np.ndarray, float]] = dict(known or {})
        if todo:
            with self.embedder() as embedder:
                probs, novelty, rows, fresh_errors = self.probabilities(embedder, [files[r] for r in todo],
                                                                        progress=progress)
            for k, message in fresh_errors.items():
                errors[todo[k]] = decode_message(message)
            for k, p, n in zip(rows, probs, novelty):
                probs_by_row[todo[k]] = (p, n)
        ok = sorted(probs_by_row)
        if not ok:
            return np.zeros((0, len(self.classes))), np.zeros(0), ok, errors
        return (np.stack([probs_by_row[r][0] for r in ok]), np.asarray([probs_by_row[r][1] for r in ok]), ok,
                errors)

    def predict(self, paths, *, top_k: int = 3, progress=False) -> Predictions:
        """Predict image files, folders or glob patterns. Unreadable files become error rows (``error`` set);
        the batch always completes. Rows keep the order of the files found."""
        if top_k < 1:
            raise InputError(f"top_k must be >= 1; got {top_k!r}")
        entries = expand_inputs(paths)
        files = [path for path, problem in entries if problem is None]
        from .embed import file_ids

        image_ids, hash_errors = file_ids(files)
        probs, novelty, ok, errors = self._probabilities_for_files(files, image_ids, progress)
        errors = {**errors, **hash_errors}
        rows = build_predictions(probs, novelty, self.classes, top_k=min(top_k, len(self.classes)),
                                 min_confidence=self.min_confidence, min_margin=self.min_margin,
                                 paths=[files[r] for r in ok],
                                 image_ids=[image_ids[r] for r in ok])
        by_row = dict(zip(ok, rows))
        result = Predictions()
        row = 0
        for path, problem in entries:
            if problem is not None:
                result.append(error_prediction(path, problem))
                continue
            result.append(by_row[row] if row in by_row else
                          error_prediction(path, errors.get(row, "not processed"), image_ids[row]))
            row += 1
        return result

    def explain(self, paths, *, label: str | None = None, contrastive: bool = True, progress=False):
        """Where the model looks on each image file: class activation maps (exact CAM for a linear probe,
        Grad-CAM for a fine-tuned network), the map of ``label`` (default: the predicted class) and a
        contrastive map against the runner-up. A list of :class:`~pixelmine.trust.explain.Explanation`, one
        per file found; unreadable files have ``error`` set. See :mod:`pixelmine.trust.explain`."""
        from ..trust.explain import explain

        return explain(self, paths, label=label, contrastive=contrastive, progress=progress)

    def export(self, output, *, precision: str = "fp32", max_drop: float = 0.01, progress=False):
        """Write one ONNX file (decoded image in, class probabilities out) and its JSON sidecar to the folder
        ``output``, measured on the test split first; int8 losing more than ``max_drop`` test accuracy is
        refused. An :class:`~pixelmine.deploy.export.ExportResult`. See :mod:`pixelmine.deploy.export`."""
        from ..deploy.export import export_model

        return export_model(self, output, precision=precision, max_drop=max_drop, progress=progress)

    def compress(self, *, sparsity: float = 0.5, budget_s: float = 600.0, progress=False):
        """Prune every network of the model (``sparsity`` of its channels), distil it back on the workspace's
        images within ``budget_s`` seconds, refit the head, and measure the original and pruned files at fp32
        and int8 side by side. A :class:`~pixelmine.deploy.compress.CompressResult`; see that module."""
        from ..deploy.compress import compress_model

        return compress_model(self, sparsity=sparsity, budget_s=budget_s, progress=progress)

    def evaluate(self, paths=None, labels=None, *, progress=False, n_bootstrap: int = 1000, save: bool = True
                 ) -> Evaluation:
        """Evaluate on the model's test split with the catalog's current labels (default), or on ``paths``
        with ``labels`` (one label per file). Labels the model does not know raise InputError."""
        if (paths is None) != (labels is None):
            raise InputError("give both paths and labels (one label per file), or neither to evaluate on the "
                             "model's test split")
        if not save:
            return self._evaluate(paths, labels, progress=progress, n_bootstrap=n_bootstrap)
        config = {"model": self.name, "on": "files" if paths is not None else "test split", "n_bootstrap": n_bootstrap}
        with self.catalog.run("evaluate", config, inputs={"model": self.name,
                                                                    "data_fingerprint": self.info.get("data_fingerprint")}) as run:
            from .plots import confusion_png, reliability_png

            result = self._evaluate(paths, labels, progress=progress, n_bootstrap=n_bootstrap)
            atomic_write_json(self.dir / "evaluation.json", result.to_dict())
            confusion_png(result, self.dir / "evaluation_confusion_matrix.png", title=f"{self.name}: evaluation")
            reliability_png(result, self.dir / "evaluation_reliability.png")
            run.counts["images"] = result.n
            run.metrics.update({k: result.metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")})
        return result

    def _evaluate(self, paths, labels, *, progress, n_bootstrap: int) -> Evaluation:
        if paths is not None:
            paths = list(paths)
            labels = list(labels)
            if len(paths) != len(labels):
                raise InputError(f"got {len(paths)} paths but {len(labels)} labels; give one label per file")
            label_indices(labels, self.classes, what="the given labels")
            predictions = self.predict(paths, top_k=len(self.classes), progress=progress)
            by_path = {p.path: p for p in predictions if p.ok}
            keep = [(by_path[os.path.abspath(p)], y) for p, y in zip(paths, labels) if os.path.abspath(p) in by_path]
            if not keep:
                raise InputError("none of the given files could be read; nothing to evaluate")
            probs = np.array([[dict((t["label"], t["probability"]) for t in p.top_k)[c] for c in self.classes]
                              for p, _ in keep])
            result = evaluate([y for _, y in keep], probs, self.classes, ids=[p.image_id for p, _ in keep],
                              n_bootstrap=n_bootstrap)
        else:
            result = self._evaluate_test_split(progress, n_bootstrap)
        return result

    def test_rows(self) -> list[dict]:
        """Catalog rows of the model's test split that are still in the workspace with a label, in order."""
        with np.load(self.dir / "data.npz", allow_pickle=False) as data:
            ids = data["ids"][data["splits"] == "test"].tolist()
        current = {row["id"]: row for row in self.catalog.images(status="ok")}
        return [current[i] for i in ids if i in current and current[i]["label"] is not None]

    def test_probabilities(self, *, progress=False) -> tuple[list[dict], np.ndarray]:
        """(catalog rows of the test split, their class probabilities (n, K) in ``classes`` order), with
        today's labels; InputError when no test image is left or a label is one the model does not know."""
        rows = self.test_rows()
        if not rows:
            raise InputError(f"none of model {self.name!r}'s test images is still in the workspace with a label; "
                             "evaluate on files instead: model.evaluate(paths, labels)")
        label_indices([r["label"] for r in rows], self.classes,
                      what=f"the current labels of model {self.name!r}'s test images")
        return rows, self._test_probabilities(rows, progress)

    def _evaluate_test_split(self, progress, n_bootstrap: int) -> Evaluation:
        rows, probs = self.test_probabilities(progress=progress)
        return evaluate([r["label"] for r in rows], probs, self.classes, ids=[r["id"] for r in rows],
                        n_bootstrap=n_bootstrap)


def decode_message(message: str) -> str:
    """A decoder's complaint about a file to predict, with the fix that fits a file the user just gave."""
    return message.split("; re-export")[0] + "; check the file, or re-export it"
