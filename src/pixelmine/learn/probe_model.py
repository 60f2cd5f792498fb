"""A head (logistic regression, linear SVM, k-NN) on a backbone's cached features."""

from __future__ import annotations

import numpy as np

from ..errors import NotFittedError
from .model import Model


class ProbeModel(Model):
    """Probabilities from the head over the backbone's feature vectors: cached ones for images the
    workspace has already embedded, the backbone's :class:`Embedder` for new files."""

    def __init__(self, catalog, root, directory):
        super().__init__(catalog, root, directory)
        self._bundle = None

    def _probe_bundle(self) -> dict:
        if self._bundle is None:
            import joblib

            self._bundle = joblib.load(self.dir / "head.joblib")
        return self._bundle

    def predict_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, K), novelty (N,)) for feature vectors of this model's backbone."""
        bundle = self._probe_bundle()
        X = np.asarray(X, dtype=np.float32)
        return bundle["head"].predict_proba(X), bundle["novelty"].novelty(X)

    @property
    def feature_sources(self) -> list[dict]:
        """The backbone(s) whose vectors the head reads, with their fingerprints (two for ``A+B``)."""
        return self.info.get("feature_sources") or [{"backbone": self.backbone,
                                                     "fingerprint": self.info["feature_fingerprint"]}]

    def embedder(self, *, threads: int | None = None):
        from ..features.embedder import Embedder
        from .joined import JointEmbedder

        if len(self.feature_sources) > 1:
            return JointEmbedder.open(self.feature_sources, root=self.root, threads=threads)
        return Embedder.open(self.backbone, root=self.root, fingerprint=self.info["feature_fingerprint"],
                             threads=threads)

    def probabilities(self, embedder, files: list[str], *, progress=False):
        embedded = embedder.embed_files(files, progress=progress)
        if not len(embedded):
            return np.zeros((0, len(self.classes))), np.zeros(0), [], embedded.errors
        probs, novelty = self.predict_features(embedded.features)
        return probs, novelty, embedded.rows, embedded.errors

    def _cached_features(self, image_ids: list[str]) -> dict[str, np.ndarray]:
        """Vectors of ``image_ids`` already in the workspace cache (same backbone fingerprints; every part of
        a joined feature set)."""
        from ..features import FeatureStore

        found: dict[str, list[np.ndarray]] = {i: [] for i in image_ids}
        for source in self.feature_sources:
            try:
                features = FeatureStore(self.root, source["backbone"], source["fingerprint"]).load()
            except NotFittedError:
                return {}
            position = {i: r for r, i in enumerate(features.ids)}
            for i in list(found):
                if i in position:
                    found[i].append(np.asarray(features.vectors[position[i]]))
                else:
                    del found[i]
        return {i: np.concatenate(parts) for i, parts in found.items()}

    def _probabilities_for_files(self, files: list[str], image_ids: list[str | None], progress):
        cached = self._cached_features([i for i in image_ids if i])
        rows = [r for r, i in enumerate(image_ids) if i in cached]
        known = {}
        if rows:
            probs, novelty = self.predict_features(np.stack([cached[image_ids[r]] for r in rows]))
            known = {r: (p, n) for r, p, n in zip(rows, probs, novelty)}
        errors: dict[int, str] = {r: "the file cannot be read" for r, i in enumerate(image_ids) if i is None}
        todo = [r for r, i in enumerate(image_ids) if i is not None and r not in known]
        return self._embed_rows(files, todo, errors, progress, known=known)

    def _test_probabilities(self, rows: list[dict], progress) -> np.ndarray:
        cached = self._cached_features([r["id"] for r in rows])
        missing = [r for r in rows if r["id"] not in cached]
        if missing:
            raise NotFittedError(f"{len(missing)} test images have no cached {self.backbone} features; run: "
                                 f"pixelmine extract --backbone {self.backbone}")
        probs, _ = self.predict_features(np.stack([cached[r["id"]] for r in rows]))
        return probs
