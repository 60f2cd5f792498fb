"""Feature vectors for a served probe model, with the backbone kept resident between requests.

``Model.predict`` builds its inference session on every call, which is right for a CLI batch but costs a
server that receives batch after batch a session start-up each time. This module opens the ONNX model that
``pixelmine extract`` exported into the feature cache (the very file extraction ran, identified by the
feature fingerprint stamped in it) once, decodes with the same function extraction uses
(:func:`pixelmine.imaging.decode.load_pixels`), and hands the vectors to ``Model.predict_features``, so
served and offline predictions are the same numbers.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class ResidentEmbedder:
    """Decode threads + one ONNX Runtime session for ``backbone`` at ``fingerprint``."""

    def __init__(self, root: Path, backbone: str, fingerprint: str, *, threads: int | None = None):
        from .. import backbones
        from ..features import FeatureStore
        from ..features.extract import available_cores
        from ..features.onnx_backend import OnnxRunner

        spec = backbones.get(backbone)
        store = FeatureStore(root, spec.name, fingerprint)
        threads = threads or available_cores()
        self.runner = None
        for precision in backbones.PRECISIONS:
            path = store.dir / f"model-{precision}.onnx"
            if path.exists():
                runner = OnnxRunner(path, threads=threads)
                if runner.metadata.get("pixelmine_fingerprint") == fingerprint:
                    self.runner = runner
                    break
                runner.close()
        if self.runner is None:
            raise LookupError(f"no exported ONNX model for {backbone} at fingerprint {fingerprint[:12]} in the "
                              "feature cache")
        self.fingerprint = fingerprint
        pre = spec.preprocessing
        self._crop = dict(input_size=pre.input_size, resize=pre.resize, interpolation=pre.interpolation)
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pixelmine-decode")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.runner.close()

    def _decode(self, path: str):
        from ..imaging.decode import load_pixels

        try:
            return load_pixels(path, **self._crop), None
        except Exception as exc:  # noqa: BLE001 - uploads were validated; a decoder may still refuse one
            return None, f"could not decode the image ({type(exc).__name__}: {exc})"

    def embed(self, paths: list[str]) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """(vectors of the decodable files, their row numbers, {row: error})."""
        decoded = list(self._pool.map(self._decode, paths))
        rows = [r for r, (pixels, _) in enumerate(decoded) if pixels is not None]
        errors = {r: message for r, (_, message) in enumerate(decoded) if message is not None}
        if not rows:
            return np.zeros((0, 0), np.float32), rows, errors
        features, _ = self.runner.run(np.stack([decoded[r][0] for r in rows]))
        return np.asarray(features, dtype=np.float32), rows, errors
