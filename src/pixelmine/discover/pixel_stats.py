"""Per-image pixel statistics for the quality finder, computed once and cached in the workspace.

Each image is decoded small (JPEG DCT-domain reduction, EXIF orientation applied), converted to grey and
resized so its shorter side is ``SIDE`` pixels — sharpness must be measured at one scale for all images, or a
large photo would look sharper than its own thumbnail. Statistics (columns of :data:`STATS`):

- ``brightness``: mean luma, 0 (black) .. 1 (white)
- ``sharpness``: log10 of the variance of the 4-neighbour Laplacian of the grey image (0..255 scale)
- ``entropy``: Shannon entropy of the 256-bin grey histogram, bits (0 for a flat image, 8 at most)
- ``colourfulness``: mean over pixels of (max - min) of R, G, B, 0 (grey) .. 1

It also computes *view hashes* for the near-duplicate finder: 64-bit DCT hashes (pHash construction) of
the image itself, its mirror image, and the 49 windows of 80 % of its sides at offsets 0, 3.3, .., 20 %
(each also mirrored). A flipped or cropped copy of an image hashes close to one of that image's views, which
a single global hash cannot see (the view hash of an 80 % crop is within 10 bits, median 4, of its source in
the demo benchmark; unrelated textile photos stay >= 16 bits apart).

The cache is ``discover/pixel-stats.npz`` (ids, stats, views), keyed by image id (the hash of the bytes, so an
image's stats never go stale) and by :data:`STATS_VERSION`. Workers run in a process pool.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ..fileio import atomic_save_npz
from ..processes import worker_pool

log = logging.getLogger(__name__)

STATS = ("brightness", "sharpness", "entropy", "colourfulness")
STATS_VERSION = 3
SIDE = 128  # pixels, shorter side of the image the statistics are measured on
CACHE_NAME = "pixel-stats.npz"
CROP = 0.8  # side fraction of the cropped views
# crop window offsets, as fractions of the side: a 7 x 7 grid over 0..20 % leaves at most 1.7 % misalignment
# (an 80 % crop's view hash: median 4, 95 % <= 8 bits from its source; with a 5 x 5 grid: 6 and 82 %)
OFFSETS = tuple(round(0.2 * k / 6, 4) for k in range(7))
N_VIEWS = 2 + 2 * len(OFFSETS) ** 2  # itself, mirror, each crop and its mirror
_HASH_INPUT, _HASH_SIDE = 32, 8
_DCT = None


class PixelData(NamedTuple):
    stats: np.ndarray  # (N, len(STATS)) float64, NaN rows where the image could not be decoded
    views: np.ndarray  # (N, N_VIEWS) uint64 view hashes, column 0 = the image itself; 0 where not decoded
    decoded: np.ndarray  # (N,) bool


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def grey_hash(grey: np.ndarray) -> int:
    """64-bit DCT hash of a grey float array (the pHash construction: 32 x 32, low 8 x 8, > median)."""
    from PIL import Image

    global _DCT
    if _DCT is None:
        _DCT = _dct_matrix(_HASH_INPUT)
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32), mode="F")
                       .resize((_HASH_INPUT, _HASH_INPUT), Image.Resampling.BILINEAR), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:_HASH_SIDE, :_HASH_SIDE]
    return int.from_bytes(np.packbits((low > np.median(low)).flatten()).tobytes(), "big")


def view_hashes(grey: np.ndarray) -> np.ndarray:
    """(N_VIEWS,) uint64: the image, its mirror, and every 80 % crop window and its mirror."""
    h, w = grey.shape
    ch, cw = max(1, round(h * CROP)), max(1, round(w * CROP))
    views = [grey, grey[:, ::-1]]
    for fy in OFFSETS:
        for fx in OFFSETS:
            y0, x0 = min(round(fy * h), h - ch), min(round(fx * w), w - cw)
            window = grey[y0:y0 + ch, x0:x0 + cw]
            views += [window, window[:, ::-1]]
    return np.array([grey_hash(v) for v in views], dtype=np.uint64)


def _open_small(path: str):
    """An upright RGB Pillow image at least SIDE pixels on its shorter side (cheap for large JPEGs)."""
    try:
        from ..imaging.decode import open_rgb
    except ImportError:  # the imaging module is optional here; plain Pillow does the same job
        open_rgb = None
    if open_rgb is not None:
        return open_rgb(path, min_side=SIDE)
    from PIL import Image, ImageOps

    image = Image.open(path)
    if image.format == "JPEG":
        image.draft("RGB", (SIDE, SIDE))
    return ImageOps.exif_transpose(image).convert("RGB")


def _measure(image) -> tuple[np.ndarray, np.ndarray]:
    """(STATS (4,), view hashes (N_VIEWS,)) of one Pillow image."""
    from PIL import Image

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = SIDE / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(rgb, dtype=np.float32)
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    brightness = float(grey.mean() / 255.0)
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1])
        sharpness = float(np.log10(lap.var() + 1.0))
    else:
        sharpness = 0.0
    hist = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    colourfulness = float((pixels.max(axis=2) - pixels.min(axis=2)).mean() / 255.0)
    return np.array([brightness, sharpness, entropy, colourfulness], dtype=np.float64), view_hashes(grey)


def _stats_of_path(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        return _measure(_open_small(path))
    except Exception as exc:  # noqa: BLE001 - any decoder failure costs this image, never the run
        log.warning("cannot read %s for quality statistics: %s", path, exc)
        return None


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != STATS_VERSION:
                return {}
            return dict(zip(data["ids"].tolist(), zip(data["stats"], data["views"])))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable pixel-stats cache %s (%s); recomputing", path, exc)
        return {}


def _save_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    ids = sorted(cache)
    atomic_save_npz(path, compressed=False, ids=np.asarray(ids, dtype="U64"), version=np.int64(STATS_VERSION),
                    stats=np.asarray([cache[i][0] for i in ids], dtype=np.float64).reshape(len(ids), len(STATS)),
                    views=np.asarray([cache[i][1] for i in ids], dtype=np.uint64).reshape(len(ids), N_VIEWS))


def pixel_stats(cache_path: str | os.PathLike, ids: Sequence[str], paths: Sequence[str], *, workers: int = 2,
                progress=None, chunk: int = 256) -> PixelData:
    """:data:`STATS` and view hashes of ``ids`` (NaN / 0 rows for images that cannot be decoded), computing only the ids
    the cache lacks (failures are retried next time); the cache is saved after every ``chunk`` images so an interrupted run keeps its work."""
    cache_path = Path(cache_path)
    cache = _load_cache(cache_path)
    todo = [(i, p) for i, p in zip(ids, paths) if i not in cache]
    done = len(ids) - len(todo)
    if progress is not None:
        progress(done, len(ids))
    if todo:
        pool = worker_pool(workers) if workers > 1 and len(todo) > 32 else None
        try:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                paths_part = [p for _, p in part]
                results = list(pool.map(_stats_of_path, paths_part, chunksize=16)) if pool else \
                    [_stats_of_path(p) for p in paths_part]
                for (image_id, _), stats in zip(part, results):
                    if stats is not None:  # failures are not cached: a file may be readable next time
                        cache[image_id] = stats
                _save_cache(cache_path, cache)
                done += len(part)
                if progress is not None:
                    progress(done, len(ids))
        finally:
            if pool is not None:
                pool.shutdown()
    missing = (np.full(len(STATS), np.nan), np.zeros(N_VIEWS, dtype=np.uint64))
    rows = [cache.get(i, missing) for i in ids]
    return PixelData(np.asarray([r[0] for r in rows], dtype=np.float64).reshape(len(ids), len(STATS)),
                     np.asarray([r[1] for r in rows], dtype=np.uint64).reshape(len(ids), N_VIEWS),
                     np.array([i in cache for i in ids], dtype=bool))
