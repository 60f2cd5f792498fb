"""A trained model loaded from ``models/<name>/``: predict on image files, evaluate, read its OOF probabilities.

    model = ws.model("logreg-mobilenet_v2")         # or pixelmine.load_model(ws, name)
    model.predict(["new/photo.jpg", "more/"])       # Predictions (label, probability, top-k, uncertain)
    model.evaluate()                                # Evaluation on its test split, with today's labels
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFittedError
from . import artifacts
from .metrics import Evaluation, evaluate, label_indices
from .predictions import Predictions, build_predictions, error_prediction, expand_inputs

log = logging.getLogger(__name__)


class Model:
    """A finished model folder. Loading reads only that folder (never the training data)."""

    def __init__(self, workspace, directory: str | Path):
        self.workspace = workspace
        self.dir = Path(directory)
        self.info = artifacts.read_info(self.dir)
        self.name: str = self.info["name"]
        self.kind: str = self.info["kind"]
        self.head: str = self.info["head"]
        self.backbone: str = self.info["backbone"]
        self.classes: list[str] = list(self.info["classes"])
        self.min_confidence: float = float(self.info["uncertainty"]["min_confidence"])
        self.min_margin: float = float(self.info["uncertainty"].get("min_margin", 0.0))
        self._bundle = None
        self._network = None

    def __repr__(self) -> str:
        acc = self.info.get("test_metrics", {}).get("accuracy")
        return (f"Model({self.name!r}, {self.kind} {self.head} on {self.backbone}, {len(self.classes)} classes"
                + (f", test accuracy {acc:.3f})" if acc is not None else ")"))

    @classmethod
    def load(cls, workspace, name: str | None = None) -> "Model":
        """The model ``name`` of ``workspace``; ``None`` loads the most recently trained one."""
        name = name or artifacts.default_model_name(workspace)
        directory = artifacts.model_dir(workspace, name)
        if not directory.is_dir():
            known = [m["name"] for m in artifacts.list_models(workspace)]
            raise NotFittedError(f"no model named {name!r} in workspace {str(workspace.root)!r}; "
                                 + (f"models: {', '.join(known)}" if known else "train one with: pixelmine train"))
        return cls(workspace, directory)

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

        try:
            data = labelled_images(self.workspace, exclude_classes=self.config.get("exclude_classes") or ())
            features = self.workspace.features(self.backbone)
        except (InputError, NotFittedError):
            return False
        have = set(features.ids)
        keep = [k for k, i in enumerate(data.ids) if i in have]
        fingerprint = data_fingerprint([data.ids[k] for k in keep], data.labels[keep], extra=features.fingerprint)
        return fingerprint == self.info["data_fingerprint"]

    def test_evaluation(self) -> Evaluation:
        return Evaluation.from_dict(self.metrics["test"])

    def oof(self) -> dict:
        """Out-of-fold probabilities of every labelled image at training time: ids, labels, classes, probs
        (N, K), folds, splits. This is what the discovery stage reads to find label errors."""
        with np.load(self.dir / "oof.npz", allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    # -- computing --------------------------------------------------------------------------------
    def _probe_bundle(self) -> dict:
        if self._bundle is None:
            import joblib

            self._bundle = joblib.load(self.dir / "head.joblib")
        return self._bundle

    def predict_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, K), novelty (N,)) for feature vectors of this model's backbone (probes only)."""
        if self.kind != "probe":
            raise InputError(f"model {self.name!r} is fine-tuned and predicts from images, not feature vectors; "
                             "use model.predict(paths)")
        bundle = self._probe_bundle()
        X = np.asarray(X, dtype=np.float32)
        return bundle["head"].predict_proba(X), bundle["novelty"].novelty(X)

    def _cached_features(self, image_ids: list[str]) -> dict[str, np.ndarray]:
        """Vectors of ``image_ids`` already in the workspace cache (same backbone fingerprint)."""
        from ..features import FeatureStore

        store = FeatureStore(self.workspace.root, self.backbone, self.info["feature_fingerprint"])
        try:
            features = store.load()
        except NotFittedError:
            return {}
        position = {i: r for r, i in enumerate(features.ids)}
        return {i: np.asarray(features.vectors[position[i]]) for i in image_ids if i in position}

    def _probs_for_files(self, files: list[str], image_ids: list[str | None], progress):
        """(probs, novelty, ok rows, {row: error}) for readable files."""
        if self.kind == "finetune":
            from .finetune import network_predict_files

            return network_predict_files(self, files, progress=progress)
        from .embed import embed_files

        cached = self._cached_features([i for i in image_ids if i])
        vectors: dict[int, np.ndarray] = {r: cached[i] for r, i in enumerate(image_ids) if i in cached}
        todo = [r for r in range(len(files)) if r not in vectors and image_ids[r] is not None]
        errors: dict[int, str] = {r: "the file cannot be read" for r, i in enumerate(image_ids) if i is None}
        if todo:
            fresh, fresh_errors = embed_files(self.workspace.root, self.backbone, [files[r] for r in todo],
                                              fingerprint=self.info["feature_fingerprint"], progress=progress)
            for k, r in enumerate(todo):
                if k in fresh_errors:
                    errors[r] = fresh_errors[k]
                else:
                    vectors[r] = fresh[k]
        ok = sorted(vectors)
        if not ok:
            return np.zeros((0, len(self.classes))), np.zeros(0), ok, errors
        probs, novelty = self.predict_features(np.stack([vectors[r] for r in ok]))
        return probs, novelty, ok, errors

    def predict(self, paths, *, top_k: int = 3, progress=False) -> Predictions:
        """Predict image files, folders or glob patterns. Unreadable files become error rows (``error`` set);
        the batch always completes. Rows keep the order of the files found."""
        if top_k < 1:
            raise InputError(f"top_k must be >= 1; got {top_k!r}")
        entries = expand_inputs(paths)
        files = [path for path, problem in entries if problem is None]
        from .embed import file_ids

        image_ids, hash_errors = file_ids(files)
        probs, novelty, ok, errors = self._probs_for_files(files, image_ids, progress)
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

    def evaluate(self, paths=None, labels=None, *, progress=False, n_bootstrap: int = 1000, save: bool = True
                 ) -> Evaluation:
        """Evaluate on the model's test split with the catalog's current labels (default), or on ``paths``
        with ``labels`` (one label per file). Labels the model does not know raise InputError."""
        if (paths is None) != (labels is None):
            raise InputError("give both paths and labels (one label per file), or neither to evaluate on the "
                             "model's test split")
        run_id = self.workspace.catalog.start_run(
            "evaluate", {"model": self.name, "on": "files" if paths is not None else "test split",
                         "n_bootstrap": n_bootstrap}) if save else None
        try:
            result = self._evaluate(paths, labels, progress=progress, n_bootstrap=n_bootstrap)
        except BaseException as exc:
            if run_id is not None:
                self.workspace.catalog.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        if save:
            from .plots import confusion_png, reliability_png

            artifacts.atomic_write_json(self.dir / "evaluation.json", result.to_dict())
            confusion_png(result, self.dir / "evaluation_confusion_matrix.png", title=f"{self.name}: evaluation")
            reliability_png(result, self.dir / "evaluation_reliability.png")
            self.workspace.catalog.finish_run(run_id, "completed", counts={"images": result.n},
                                              metrics={k: result.metrics[k] for k in
                                                       ("accuracy", "balanced_accuracy", "macro_f1")})
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
            import os

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

    def _evaluate_test_split(self, progress, n_bootstrap: int) -> Evaluation:
        with np.load(self.dir / "data.npz", allow_pickle=False) as data:
            ids = data["ids"][data["splits"] == "test"].tolist()
        current = {row["id"]: row for row in self.workspace.images(status="ok")}
        rows = [current[i] for i in ids if i in current and current[i]["label"] is not None]
        if not rows:
            raise InputError(f"none of model {self.name!r}'s {len(ids)} test images is still in the workspace "
                             "with a label; evaluate on files instead: model.evaluate(paths, labels)")
        labels = [r["label"] for r in rows]
        label_indices(labels, self.classes, what=f"the current labels of model {self.name!r}'s test images")
        if self.kind == "probe":
            cached = self._cached_features([r["id"] for r in rows])
            missing = [r for r in rows if r["id"] not in cached]
            if missing:
                raise NotFittedError(f"{len(missing)} test images have no cached {self.backbone} features; run: "
                                     f"pixelmine extract --backbone {self.backbone}")
            probs, _ = self.predict_features(np.stack([cached[r["id"]] for r in rows]))
        else:
            from .finetune import network_predict_files

            probs, _, ok, errors = network_predict_files(self, [r["path"] for r in rows], progress=progress)
            if errors:
                raise InputError(f"{len(errors)} test images could not be read, e.g. {rows[min(errors)]['path']!r}: "
                                 f"{errors[min(errors)]}")
        return evaluate(labels, probs, self.classes, ids=[r["id"] for r in rows], n_bootstrap=n_bootstrap)
