"""The trained model behind ``POST /predict``: loaded once in the prediction thread, re-loaded when a newer
model is trained. Every call is one ``Model.predict`` over a batch of validated upload files."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import MissingDependencyError

log = logging.getLogger(__name__)


class Predictor:
    """Owns the prediction threads; each holds its own workspace handle, model and backbone session."""

    def __init__(self, root: Path, model_name: str | None = None, *, top_k: int = 5, resident: bool = True,
                 workers: int | None = None):
        from ..features.extract import available_cores

        self.root = Path(root)
        self.resident = resident  # keep the backbone loaded between batches (probe models)
        self.model_name = model_name
        self.top_k = top_k
        cores = available_cores()
        # Batches run side by side, one model session per worker, each with its share of the cores: on few
        # cores that beats one session whose threads synchronise at every layer (measured: benchmarks/serve.py).
        self.workers = workers or min(4, cores)
        self.threads = max(1, cores // self.workers)
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pixelmine-predict")
        self._local = threading.local()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _model(self):
        from ..workspace import open_workspace

        if getattr(self._local, "ws", None) is None:
            self._local.ws = open_workspace(self.root)
            self._local.model = None
        ws = self._local.ws
        try:
            from ..learn import artifacts
        except ImportError as exc:  # pragma: no cover - the learn stage is part of the package
            raise MissingDependencyError("scikit-learn", "prediction", "pip install 'pixelmine[ml]'") from exc
        name = self.model_name or artifacts.default_model_name(ws)
        model = self._local.model
        stamp = _stamp(artifacts.model_dir(ws, name))
        if model is None or model.name != name or self._local.stamp != stamp:
            model = ws.model(name)
            self._local.model, self._local.stamp = model, stamp
            self._local.embedder = self._resident_embedder(model)
            log.info("serving model %s (%s)", model.name,
                     "resident backbone" if self._local.embedder else "Model.predict per batch")
        return model

    def _resident_embedder(self, model):
        """A resident backbone for probe models (None: use Model.predict, e.g. for fine-tuned networks)."""
        previous = getattr(self._local, "embedder", None)
        if previous is not None:
            previous.close()
        if model.kind != "probe" or not self.resident:
            return None
        from .embedder import ResidentEmbedder

        try:
            return ResidentEmbedder(self.root, model.backbone, model.info["feature_fingerprint"],
                                    threads=self.threads)
        except (LookupError, ImportError, OSError) as exc:
            log.info("no resident backbone for %s (%s); predicting with Model.predict", model.name, exc)
            return None

    def predict_files(self, paths: list[str]) -> list[dict]:
        """One prediction record per file, in order (called by the batcher, in the prediction thread)."""
        model = self._model()
        if self._local.embedder is not None:
            return self._predict_resident(model, paths)
        try:
            rows = model.predict(paths, top_k=min(self.top_k, len(model.classes)), progress=False)
        except ImportError as exc:
            raise MissingDependencyError(getattr(exc, "name", None) or "torch", "prediction on new images",
                                         "pip install 'pixelmine[ml]'") from exc
        by_path = {row.path: row for row in rows}
        records = []
        for path in paths:
            row = by_path.get(str(Path(path).resolve())) or by_path.get(path)
            if row is None:
                records.append({"error": "the model returned no prediction for this file"})
                continue
            records.append({"label": row.label, "probability": row.probability, "top_k": row.top_k,
                            "uncertain": row.uncertain, "reason": row.reason, "novelty": row.novelty,
                            "image_id": row.image_id, "error": row.error, "model": model.name})
        return records

    def _predict_resident(self, model, paths: list[str]) -> list[dict]:
        return _resident_records(model, self._local.embedder, paths, self.top_k)


def _resident_records(model, embedder, paths: list[str], top_k: int) -> list[dict]:
    from ..learn.predictions import build_predictions

    vectors, rows, errors = embedder.embed(paths)
    records: list[dict] = [{"error": errors.get(r, "not processed"), "model": model.name} for r in range(len(paths))]
    if rows:
        probs, novelty = model.predict_features(vectors)
        built = build_predictions(probs, novelty, model.classes, top_k=min(top_k, len(model.classes)),
                                  min_confidence=model.min_confidence, paths=[paths[r] for r in rows])
        for r, row in zip(rows, built):
            records[r] = {"label": row.label, "probability": row.probability, "top_k": row.top_k,
                          "uncertain": row.uncertain, "reason": row.reason, "novelty": row.novelty,
                          "image_id": None, "error": None, "model": model.name}
    return records


def _stamp(directory: Path) -> float | None:
    try:
        return (directory / "model.json").stat().st_mtime
    except OSError:
        return None

