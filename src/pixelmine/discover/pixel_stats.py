"""Per-image pixel statistics for the quality finder, computed once and cached in the workspace.

Each image is decoded small (JPEG DCT-domain reduction, EXIF orientation applied), converted to grey and
resized so its shorter side is ``SIDE`` pixels — sharpness must be measured at one scale for all images, or a
large photo would look sharper than its own thumbnail. Statistics (columns of :data:`STATS`):

- ``brightness``: mean luma, 0 (black) .. 1 (white)
- ``sharpness``: log10 of the variance of the 4-neighbour Laplacian of the grey image (0..255 scale)
- ``entropy``: Shannon entropy of the 256-bin grey histogram, bits (0 for a flat image, 8 at most)
- ``colourfulness``: mean over pixels of (max - min) of R, G, B, 0 (grey) .. 1

It also computes what the near-duplicate finder compares (:mod:`.views`): the *view hashes* of the image,
its mirror and 49 crop windows, and the image's 63 low-frequency coefficients.

The cache is ``discover/pixel-stats.npz`` (ids, stats, views, coefficients), keyed by image id (the hash of the bytes, so an
image's stats never go stale) and by :data:`STATS_VERSION`. Workers run in a process pool.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ..fileio import atomic_save_npz
from ..processes import worker_pool
from .views import N_COEFFICIENTS, N_VIEWS, view_hashes_and_coefficients, view_lows

log = logging.getLogger(__name__)

STATS = ("brightness", "sharpness", "entropy", "colourfulness")
STATS_VERSION = 4
SIDE = 128  # pixels, shorter side of the image the statistics are measured on
CACHE_NAME = "pixel-stats.npz"


class PixelData(NamedTuple):
    stats: np.ndarray  # (N, len(STATS)) float64, NaN rows where the image could not be decoded
    views: np.ndarray  # (N, N_VIEWS) uint64 view hashes, column 0 = the image itself; 0 where not decoded
    decoded: np.ndarray  # (N,) bool
    coefficients: np.ndarray  # (N, N_COEFFICIENTS) float32 low-frequency coefficients of each image (views.py)
    encoding: np.ndarray  # (N,) float64 encoding quality of each file (encoding.py), NaN where unknown


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


def _grey(image) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32 pixels, grey float32) of a Pillow image resized so its shorter side is SIDE pixels."""
    from PIL import Image

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = SIDE / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(rgb, dtype=np.float32)
    return pixels, pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


Measurement = tuple  # (stats (len(STATS),), view hashes (N_VIEWS,), coefficients (N_COEFFICIENTS,), encoding)


def _measure(image) -> Measurement:
    """(STATS, view hashes, low-frequency coefficients) of one Pillow image."""
    pixels, grey = _grey(image)
    brightness = float(grey.mean() / 255.0)
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1])
        sharpness = float(np.log10(lap.var() + 1.0))
    else:
        sharpness = 0.0
    hist = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]  # not max(axis=2): 10x slower on 3 channels
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    colourfulness = float(spread.mean() / 255.0)
    hashes, coefficients = view_hashes_and_coefficients(grey)
    return (np.array([brightness, sharpness, entropy, colourfulness], dtype=np.float64), hashes, coefficients,
            _encoding_of(image))


def _encoding_of(image) -> float:
    from .encoding import encoding_quality

    return encoding_quality(image)


def _stats_of_path(path: str) -> Measurement | None:
    try:
        from PIL import Image

        with Image.open(path) as header:  # the quantisation tables: the header only, no decoding
            encoding = _encoding_of(header)
        return _measure(_open_small(path))[:3] + (encoding,)
    except Exception as exc:  # noqa: BLE001 - any decoder failure costs this image, never the run
        log.warning("cannot read %s for quality statistics: %s", path, exc)
        return None


def _views_of_path(task: tuple[str, list[int]]) -> np.ndarray | None:
    path, views = task
    try:
        lows = view_lows(_grey(_open_small(path))[1])
    except Exception as exc:  # noqa: BLE001 - an unreadable file only loses these comparisons
        log.warning("cannot read %s to compare it with a near-copy: %s", path, exc)
        return None
    return lows[views].reshape(len(views), -1)[:, 1:].astype(np.float32)


def view_coefficients_of(paths: Sequence[str], views: Sequence[int], *, workers: int = 2) -> np.ndarray:
    """(P, N_COEFFICIENTS) coefficients of view ``views[k]`` of ``paths[k]``, decoded again, each file once (crop
    views are not cached: 49 of them per image would make the cache 50 times larger); NaN rows where a file
    cannot be read."""
    out = np.full((len(paths), N_COEFFICIENTS), np.nan, dtype=np.float32)
    wanted: dict[str, list[int]] = {}
    for row, path in enumerate(paths):
        wanted.setdefault(path, []).append(row)
    tasks = [(path, [int(views[r]) for r in rows]) for path, rows in wanted.items()]
    if not tasks:
        return out
    pool = worker_pool(workers) if workers > 1 and len(tasks) > 64 else None
    try:
        results = pool.map(_views_of_path, tasks, chunksize=32) if pool else map(_views_of_path, tasks)
        for rows, found in zip(wanted.values(), results):
            if found is not None:
                out[rows] = found
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def _load_cache(path: Path) -> dict[str, Measurement]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != STATS_VERSION:
                return {}
            return dict(zip(data["ids"].tolist(), zip(data["stats"], data["views"], data["coefficients"],
                                                      data["encoding"].tolist())))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable pixel-stats cache %s (%s); recomputing", path, exc)
        return {}


def _save_cache(path: Path, cache: dict[str, Measurement]) -> None:
    ids = sorted(cache)
    atomic_save_npz(path, compressed=False, ids=np.asarray(ids, dtype="U64"), version=np.int64(STATS_VERSION),
                    stats=np.asarray([cache[i][0] for i in ids], dtype=np.float64).reshape(len(ids), len(STATS)),
                    views=np.asarray([cache[i][1] for i in ids], dtype=np.uint64).reshape(len(ids), N_VIEWS),
                    coefficients=np.asarray([cache[i][2] for i in ids], dtype=np.float32).reshape(
                        len(ids), N_COEFFICIENTS),
                    encoding=np.asarray([cache[i][3] for i in ids], dtype=np.float64))


SAVE_EVERY_S = 20.0  # seconds between cache saves: an interrupted run keeps its work, a large one is not slowed


def pixel_stats(cache_path: str | os.PathLike, ids: Sequence[str], paths: Sequence[str], *, workers: int = 2,
                progress=None, chunk: int = 256) -> PixelData:
    """:data:`STATS`, view hashes and coefficients of ``ids`` (NaN / 0 rows for images that cannot be decoded),
    computing only the ids the cache lacks (failures are retried next time). The cache is saved every
    :data:`SAVE_EVERY_S` seconds and at the end, so an interrupted run keeps its work without rewriting a large
    cache after every chunk."""
    cache_path = Path(cache_path)
    cache = _load_cache(cache_path)
    todo = [(i, p) for i, p in zip(ids, paths) if i not in cache]
    done = len(ids) - len(todo)
    if progress is not None:
        progress(done, len(ids))
    if todo:
        pool = worker_pool(workers) if workers > 1 and len(todo) > 32 else None
        saved = time.monotonic()
        try:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                paths_part = [p for _, p in part]
                results = list(pool.map(_stats_of_path, paths_part, chunksize=16)) if pool else \
                    [_stats_of_path(p) for p in paths_part]
                for (image_id, _), stats in zip(part, results):
                    if stats is not None:  # failures are not cached: a file may be readable next time
                        cache[image_id] = stats
                done += len(part)
                if time.monotonic() - saved >= SAVE_EVERY_S or done == len(ids):
                    _save_cache(cache_path, cache)
                    saved = time.monotonic()
                if progress is not None:
                    progress(done, len(ids))
        finally:
            if pool is not None:
                pool.shutdown()
    missing = (np.full(len(STATS), np.nan), np.zeros(N_VIEWS, dtype=np.uint64),
               np.zeros(N_COEFFICIENTS, dtype=np.float32), float("nan"))
    rows = [cache.get(i, missing) for i in ids]
    return PixelData(np.asarray([r[0] for r in rows], dtype=np.float64).reshape(len(ids), len(STATS)),
                     np.asarray([r[1] for r in rows], dtype=np.uint64).reshape(len(ids), N_VIEWS),
                     np.array([i in cache for i in ids], dtype=bool),
                     np.asarray([r[2] for r in rows], dtype=np.float32).reshape(len(ids), N_COEFFICIENTS),
                     np.asarray([r[3] for r in rows], dtype=np.float64))
