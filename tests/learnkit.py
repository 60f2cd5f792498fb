"""Workspaces with planted truth for the learn tests: tiny real image files (so ingest gives real ids and
paths) plus synthetic feature vectors whose class structure is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from imagefactory import photo, save

import pixelmine
from pixelmine.features import FeatureStore

BACKBONE = "tiny"
FINGERPRINT = "fp0123456789abcdef"


def image_folders(root: Path, counts: dict[str, int], *, size=(40, 32), start_seed: int = 0) -> Path:
    """Class subfolders with distinct small PNGs: counts = {label: n}."""
    seed = start_seed
    for label, n in counts.items():
        for k in range(n):
            save(photo(seed, size), root / label / f"{label}_{k:04d}.jpg")
            seed += 1
    return root


def class_features(labels: list[str], *, dim: int = 16, separation: float = 6.0, noise: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Gaussian clusters, one per class, centres `separation` apart along distinct axes."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    centres = np.zeros((len(classes), dim))
    for k in range(len(classes)):
        centres[k, k % dim] = separation
    index = {c: k for k, c in enumerate(classes)}
    return (centres[[index[y] for y in labels]] + noise * rng.standard_normal((len(labels), dim))).astype(np.float32)


def labelled_workspace(tmp_path: Path, counts: dict[str, int], *, dim: int = 16, separation: float = 6.0,
                       noise: float = 1.0, seed: int = 0, write_features: bool = True):
    """(workspace, ids, labels, vectors): ingested class folders + synthetic features for every image."""
    source = image_folders(tmp_path / "images", counts)
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    rows = ws.images(status="ok")
    ids = [r["id"] for r in rows]
    labels = [r["label"] for r in rows]
    vectors = class_features(labels, dim=dim, separation=separation, noise=noise, seed=seed)
    if write_features:
        FeatureStore(ws.root, BACKBONE, FINGERPRINT).write(ids, vectors)
    return ws, ids, labels, vectors


# auto (the default head) considers only the synthetic feature set: no network is extracted
FAST = {"backbone": BACKBONE, "search_budget_s": 5.0, "bootstrap": 100, "cv_folds": 3, "auto": {"backbones": (), "finetune": False}}


def tinted_folders(root: Path, counts: dict[str, tuple[int, tuple[int, int, int]]], *, size=(48, 40)) -> Path:
    """Class folders whose images differ visibly: {label: (n, rgb tint)}; a photo-like field times the tint."""
    from PIL import Image

    seed = 10_000
    for label, (n, tint) in counts.items():
        for k in range(n):
            base = np.asarray(photo(seed, size), dtype=np.float32) / 255.0
            pixels = np.clip(0.3 * base * 255 + 0.7 * np.asarray(tint, dtype=np.float32), 0, 255).astype(np.uint8)
            save(Image.fromarray(pixels), root / label / f"{label}_{k:04d}.jpg")
            seed += 1
    return root


def tinted_workspace(root: Path, counts: dict[str, tuple[int, tuple[int, int, int]]]):
    """A workspace with :func:`tinted_folders` ingested (labels from the folders)."""
    source = tinted_folders(root / "images", counts)
    ws = pixelmine.open_workspace(root / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    return ws
