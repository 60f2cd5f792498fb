"""The trained model behind ``POST /predict``: loaded once in the prediction thread, re-loaded when a newer
model is trained. Every call is one ``Model.predict`` over a batch of validated upload files."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import MissingDependencyError, NotFittedError

log = logging.getLogger(__name__)


class Predictor:
    """Owns a one-thread executor: the model, its workspace handle and its SQLite connection live there."""

    def __init__(self, root: Path, model_name: str | None = None, *, top_k: int = 5):
        self.root = Path(root)
        self.model_name = model_name
        self.top_k = top_k
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelmine-predict")
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
            log.info("serving model %s", model.name)
        return model

    def model_info(self) -> dict:
        """Name, classes and backbone of the model that would answer now (runs in the prediction thread)."""
        model = self._model()
        return {"name": model.name, "kind": model.kind, "head": model.head, "backbone": model.backbone,
                "classes": list(model.classes)}

    def predict_files(self, paths: list[str]) -> list[dict]:
        """One prediction record per file, in order (called by the batcher, in the prediction thread)."""
        model = self._model()
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


def _stamp(directory: Path) -> float | None:
    try:
        return (directory / "model.json").stat().st_mtime
    except OSError:
        return None


def no_model_message(root: Path) -> str:
    return f"no model trained yet in workspace {str(root)!r}; run: pixelmine train"


__all__ = ["NotFittedError", "Predictor", "no_model_message"]
