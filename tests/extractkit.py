"""Helpers for the feature-extraction tests: real photos on disk, a deliberately slow tiny backbone."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

# scikit-image's bundled colour photos; their ImageNet classes are known
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def write_photos(folder: Path, names=PHOTOS, quality: int = 92) -> dict[str, Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path, quality=quality)
        paths[name] = path
    return paths


def write_synthetic(folder: Path, count: int, size=(80, 60), start: int = 0) -> list[Path]:
    """Distinct smooth colour fields as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(start, start + count):
        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        path = folder / f"img_{seed:04d}.jpg"
        Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


SLOW_NAME = "tiny_slow_test"


def register_slow_backbone(delay_s: float = 0.05) -> str:
    """tiny_test's network with a sleep per batch, so a run lasts long enough to be killed mid-way.
    Same name, weights and preprocessing in every process, hence the same fingerprint."""
    from pixelmine import backbones
    from pixelmine.backbones import builtin

    if SLOW_NAME in backbones.names():
        return SLOW_NAME
    tiny = backbones.get("tiny_test")

    def build(spec, weights):
        from torch import nn

        inner = builtin._build_tiny(spec, weights)

        class Slow(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                time.sleep(delay_s)
                return self.inner(x)

        return Slow()

    backbones.register(backbones.Backbone(
        name=SLOW_NAME, description="tiny_test with a sleep per batch", builder=build, weights=tiny.weights,
        preprocessing=tiny.preprocessing, feature_dim=tiny.feature_dim, num_classes=tiny.num_classes,
        labels=tiny.labels, source="test"))
    return SLOW_NAME


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class CrashingPath(str):
    """A path whose unpickling kills the process: stands in for a decoder that segfaults in a worker."""

    def __reduce__(self):
        import os

        return (os._exit, (3,))
