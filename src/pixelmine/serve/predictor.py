"""The trained model behind ``POST /predict``: loaded once per prediction thread with a resident embedder,
re-loaded when a newer model is trained. Every call is one batch of validated upload files.

Each thread's state (workspace handle, model, embedder) is built whole and only then published to the
thread, in one assignment: a failure while loading (a model being retrained, a request refused half-way)
leaves the previous state, or none, never a half-built one that would poison the thread.

``model_name`` may also be an export folder (or its model.onnx): then the exported file answers, through
:class:`~pixelmine.deploy.served.ExportedModel`, re-loaded when its classifier.json is rewritten.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ThreadState:
    ws: object
    key: str  # the model's name, or the export's path
    model: object
    stamp: float | None  # model.json's (an export: classifier.json's) mtime when loaded: a retrained model has a new one
    embedder: object | None  # resident backbone session; None: Model.predict per batch

    def close(self) -> None:
        if self.embedder is not None:
            self.embedder.close()


class Predictor:
    """Owns the prediction threads; each holds its own workspace handle, model and embedder."""

    def __init__(self, root: Path, model_name: str | None = None, *, top_k: int = 5, resident: bool = True,
                 workers: int | None = None):
        from ..features.embedder import available_cores

        self.root = Path(root)
        self.resident = resident  # keep the network loaded between batches
        self.model_name = model_name
        # Decided once, as an absolute path: a wrong export path fails at start, with what an export is.
        self.export = _export_location(model_name)
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

    def _state(self) -> _ThreadState:
        from ..learn import artifacts
        from ..workspace import open_workspace

        current: _ThreadState | None = getattr(self._local, "state", None)
        ws = current.ws if current is not None else open_workspace(self.root)
        if self.export is not None:
            from ..deploy.served import sidecar_path

            key, stamp = str(self.export), _stamp(sidecar_path(self.export))
        else:
            key = self.model_name or artifacts.default_model_name(ws.root)
            stamp = _stamp(artifacts.model_path(ws.root, key) / artifacts.MODEL_FILE)
        if current is not None and current.key == key and current.stamp == stamp:
            return current
        model = self._load(ws, key)
        embedder = self._resident_embedder(model)
        state = _ThreadState(ws, key, model, stamp, embedder)
        self._local.state = state  # published whole, after everything above succeeded
        if current is not None:
            current.close()
        log.info("serving model %s (%s)", model.name, "resident network" if embedder else "Model.predict per batch")
        return state

    def _load(self, ws, key: str):
        if self.export is not None:
            from ..deploy.served import ExportedModel

            return ExportedModel(self.export)
        return ws.model(key)

    def _resident_embedder(self, model):
        if not self.resident:
            return None
        try:
            return model.embedder(threads=self.threads)
        except (LookupError, ImportError, OSError) as exc:
            log.info("no resident network for %s (%s); predicting with Model.predict", model.name, exc)
            return None

    def predict_files(self, paths: list[str]) -> list[dict]:
        """One prediction record per file, in order (called by the batcher, in the prediction thread)."""
        state = self._state()
        model = state.model
        top_k = min(self.top_k, len(model.classes))
        if state.embedder is None:
            rows = model.predict(paths, top_k=top_k, progress=False)
            by_path = {row.path: row for row in rows}
            found = [by_path.get(str(Path(path).resolve())) or by_path.get(path) for path in paths]
        else:
            found = _resident_predictions(model, state.embedder, paths, top_k)
        return [{"error": "the model returned no prediction for this file", "model": model.name} if row is None else
                {"label": row.label, "probability": row.probability, "top_k": row.top_k, "uncertain": row.uncertain,
                 "reason": row.reason, "novelty": row.novelty, "image_id": row.image_id, "error": row.error,
                 "model": model.name} for row in found]


def _resident_predictions(model, embedder, paths: list[str], top_k: int) -> list:
    from ..learn.predictions import build_predictions, error_prediction

    probs, novelty, rows, errors = model.probabilities(embedder, paths)
    built = dict(zip(rows, build_predictions(probs, novelty, model.classes, top_k=top_k,
                                             min_confidence=model.min_confidence, min_margin=model.min_margin,
                                             paths=[paths[r] for r in rows])))
    return [built[r] if r in built else error_prediction(paths[r], errors.get(r, "not processed"))
            for r in range(len(paths))]


def _stamp(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _export_location(model_name: str | None) -> Path | None:
    if model_name is None:
        return None
    from ..deploy.served import export_location

    return export_location(model_name)
