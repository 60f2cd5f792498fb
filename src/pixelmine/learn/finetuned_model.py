"""A fine-tuned network: its own backbone ``model:NAME``, embedded like any other (features/embedder.py)."""

from __future__ import annotations

import numpy as np

from .model import Model
from .tta import saved_moves, views


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class FinetunedModel(Model):
    """Probabilities from the fine-tuned network's own classifier, averaged over the test-time moves its
    training used; novelty from its own features of the training images."""

    def __init__(self, catalog, root, directory):
        super().__init__(catalog, root, directory)
        self._novelty = None
        self.moves = saved_moves(self.info["network"])

    @property
    def as_backbone(self) -> str:
        """The backbone name of this network: ``model:NAME`` (``pixelmine extract --backbone model:NAME``)."""
        return f"model:{self.name}"

    def _novelty_scorer(self):
        if self._novelty is None:
            import joblib

            self._novelty = joblib.load(self.dir / "novelty.joblib")
        return self._novelty

    def embedder(self, *, threads: int | None = None):
        from ..features.embedder import Embedder

        return Embedder.open(self.as_backbone, root=self.root, threads=threads)

    def probabilities(self, embedder, files: list[str], *, progress=False):
        probs_parts, feature_parts, rows, errors = [], [], [], {}
        for chunk_rows, pixels, chunk_errors in embedder.decode_files(files, batch_size=32, progress=progress):
            errors.update(chunk_errors)
            if not chunk_rows:
                continue
            total = None
            crops = views(pixels, self.moves)
            for k, view in enumerate(crops):
                out = embedder.embed_pixels(view)
                p = softmax(out.logits.astype(np.float64))
                total = p if total is None else total + p
                if k == 0:
                    feature_parts.append(out.features)
            probs_parts.append(total / len(crops))
            rows.extend(chunk_rows)
        if not rows:
            return np.zeros((0, len(self.classes))), np.zeros(0), [], errors
        features = np.concatenate(feature_parts)
        return np.concatenate(probs_parts), self._novelty_scorer().novelty(features), rows, errors

