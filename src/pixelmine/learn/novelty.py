"""How far an image is from everything the model was trained on.

A classifier's probability says which known class an image resembles most, not whether it resembles any:
a photo of a cat fed to a textile-defect model still gets a confident class. ``NoveltyScorer`` measures the
mean cosine distance to the k nearest training images (after centring and a PCA to at most 64 dimensions,
on a reference sample of at most 5,000 training images) and divides it by the same distance's
``quantile`` among the training images themselves (leave-one-out). A score above 1 means farther from the
training data than (say) 99 % of the training images are from each other.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted, validate_data


class NoveltyScorer(BaseEstimator):
    def __init__(self, *, n_components: int = 64, n_neighbors: int = 5, max_reference: int = 5000,
                 quantile: float = 0.99, random_state: int | None = 0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.max_reference = max_reference
        self.quantile = quantile
        self.random_state = random_state

    def _unit(self, X) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.mean_
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def _embed(self, X) -> np.ndarray:
        Z = self.pca_.transform(self._unit(X)) if self.pca_ is not None else self._unit(X)
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def fit(self, X, y=None) -> "NoveltyScorer":
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        if len(X) < 2:
            raise ValueError(f"NoveltyScorer needs at least 2 training images; got {len(X)}")
        rng = np.random.default_rng(self.random_state)
        rows = rng.choice(len(X), size=min(len(X), self.max_reference), replace=False)
        reference = X[np.sort(rows)]
        self.mean_ = reference.mean(axis=0)
        components = min(self.n_components, reference.shape[1], len(reference) - 1)
        unit = self._unit(reference)
        self.pca_ = (PCA(n_components=components, random_state=self.random_state).fit(unit)
                     if components < reference.shape[1] else None)
        embedded = self._embed(reference)
        self.n_neighbors_ = int(min(self.n_neighbors, len(reference) - 1))
        self.index_ = NearestNeighbors(n_neighbors=self.n_neighbors_, algorithm="brute").fit(embedded)
        distances, _ = self.index_.kneighbors(embedded, n_neighbors=self.n_neighbors_ + 1)
        own = distances[:, 1:].mean(axis=1)  # leave-one-out: drop each image's distance to itself
        self.threshold_ = float(max(np.quantile(own, self.quantile), 1e-9))
        return self

    def distance(self, X) -> np.ndarray:
        """Mean Euclidean distance (on unit vectors) to the k nearest reference images."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        distances, _ = self.index_.kneighbors(self._embed(X))
        return distances.mean(axis=1)

    def novelty(self, X) -> np.ndarray:
        """Novelty ratio per image: distance / training threshold (> 1: farther than the training images)."""
        return self.distance(X) / self.threshold_
