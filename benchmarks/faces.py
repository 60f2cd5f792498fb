"""Faces: CenterFace recall, false positives and speed on composites with faces at known boxes, and how many
of them the detector still finds after anonymisation.

    .venv/bin/python benchmarks/faces.py                     # about a minute on 2 quiet cores
    .venv/bin/python benchmarks/faces.py --images 96 --seed 1

composites  scikit-image's face-free photos and textures (coffee, chelsea, rocket, immunohistochemistry, brick,
            grass, gravel, hubble), cropped and resized to 1024x768, each with 3-6 faces pasted at random,
            non-overlapping places; every paste is feathered over its outer 10 % so its edge is no square cue.
            A face's size is its height, drawn log-uniformly from 20 to 200 px. Three sources, equally often:
            "astronaut"      the face of ``skimage.data.astronaut()`` (box drawn by hand) with her hair, ears
                             and a margin of the photo: a real face in a real head;
            "lfw in a head"  each of the 100 faces of ``skimage.data.lfw_subset()`` blended into the
                             astronaut's face oval in her skin tone: 100 different faces, with the head, hair
                             and neck around them that a photo has;
            "lfw bare crop"  the same 25x25 grey crops alone (brow to chin, no head, upscaled), grey or
                             tinted with one of four skin tones. No photo looks like this; CenterFace leans on
                             the head around a face, so these are a stress case, reported apart.
            The headline recall is over the faces with context (the first two).
found       a planted face is found when a detection overlaps it with IoU >= 0.3 (one detection per face,
            greedy by IoU); IoU >= 0.5 is shown beside it.
fp/image    detections that overlap no planted face at IoU >= 0.3 (the scenes hold no real human face).
ms/image    ``FaceDetector().detect`` (the defaults) on the upright array, time.perf_counter around the call,
            one image at a time after one warm-up call; median and p95.
again       each image anonymised at the detector's own boxes (``anonymise(rgb, detect(rgb), method)``, the
            real pipeline), then detected again: the share of the faces found before that are found again.
threshold   the same images at other thresholds (NMS is greedy by score, so the detections at a higher
            threshold are exactly those at a lower one that score above it).
sizes       faces with context on 640x480 composites (--small; enlarged 1.6x by the default max_side), the
            1024x768 ones at max_side 800 / 960 / 1024, and 2048x1536 ones (--large; shrunk to less than half)
            at the default max_side and at full size (max_side=None).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from auto import machine, print_table  # noqa: E402  (benchmarks/auto.py)
from pixelmine.privacy.faces import DEFAULT_MAX_SIDE, DEFAULT_THRESHOLD, FaceDetector, anonymise  # noqa: E402

SEED = 0
SIZE = (1024, 768)  # width, height of a composite
FACE_HEIGHTS = (20, 200)  # px, log-uniform
BUCKETS = ((20, 32), (32, 64), (64, 10_000))
MATCH_IOU = 0.3
SWEEP = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MAX_SIDES = (800, 960, 1024)  # tried on the 1024x768 composites
ASTRONAUT_FACE = (180, 58, 272, 180)  # x0, y0, x1, y1 in skimage.data.astronaut(), by hand: brow to chin
SKIN_TONES = ((1.00, 0.80, 0.66), (0.94, 0.72, 0.55), (0.78, 0.56, 0.40), (0.55, 0.38, 0.26))
KINDS = ("astronaut", "lfw in a head", "lfw bare crop")  # drawn with equal chances
WITH_CONTEXT = ("astronaut", "lfw in a head")  # what a photo shows: a face inside a head
FEATHER = 0.10  # fraction of a paste's side over which it blends into the scene


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


# -- composites -----------------------------------------------------------------------------------------
def scenes() -> list[np.ndarray]:
    import skimage.data as data

    photos = [data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    textures = [data.brick(), data.grass(), data.gravel()]
    photos += [np.stack([t] * 3, axis=-1) for t in textures]
    photos.append(data.hubble_deep_field())
    return photos


def scene_crop(photo: np.ndarray, size: tuple[int, int], rng) -> np.ndarray:
    """A random crop of ``photo`` at the composite's aspect ratio (at least half its shorter side), resized."""
    height, width = photo.shape[:2]
    aspect = size[0] / size[1]
    crop_h = int(rng.uniform(0.5, 1.0) * min(height, width / aspect))
    crop_w = int(crop_h * aspect)
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop.resize(size, Image.Resampling.BICUBIC))


def face_sources() -> dict[str, list[tuple[np.ndarray, tuple[float, float, float, float]]]]:
    """Source kind -> [(patch, face box inside the patch as fractions of the patch)]."""
    import skimage.data as data

    lfw = [np.rint(f * 255).astype(np.uint8) for f in data.lfw_subset()[:100]]  # the first 100 are faces
    astronaut = data.astronaut()
    return {"astronaut": [head_patch(astronaut)],
            "lfw in a head": [head_patch(face_in_head(astronaut, face)) for face in lfw],
            "lfw bare crop": [(face, (0.0, 0.0, 1.0, 1.0)) for face in lfw]}


def head_patch(photo: np.ndarray):
    """The astronaut's face box with her hair, ears and some backdrop around it, and the box in it."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    left, top = int(x0 - 0.4 * (x1 - x0)), int(y0 - 0.25 * (y1 - y0))
    right, bottom = int(x1 + 0.4 * (x1 - x0)), int(y1 + 0.25 * (y1 - y0))
    width, height = right - left, bottom - top
    return photo[top:bottom, left:right], ((x0 - left) / width, (y0 - top) / height,
                                           (x1 - left) / width, (y1 - top) / height)


def face_in_head(astronaut: np.ndarray, face: np.ndarray) -> np.ndarray:
    """The astronaut photo with an LFW face blended into her face's oval, in her skin tone: a face with the
    head, hair and neck around it that a real photo has and a 25 px crop lacks."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    width, height = x1 - x0, y1 - y0
    grey = np.asarray(Image.fromarray(face).resize((width, height), Image.Resampling.BICUBIC)).astype(np.float64)
    photo = astronaut.astype(np.float64)
    region = photo[y0:y1, x0:x1]
    tinted = grey[..., None] / max(grey.mean(), 1.0) * region.reshape(-1, 3).mean(axis=0)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
    alpha = np.clip((1.0 - radius) / 0.25, 0, 1)[..., None]
    photo[y0:y1, x0:x1] = alpha * tinted + (1 - alpha) * region
    return np.rint(photo).clip(0, 255).astype(np.uint8)


def render_face(kind: str, source, face_height: float, rng):
    """The patch resized so its face is ``face_height`` px tall, the face box in it (px), and its kind."""
    patch, (fx0, fy0, fx1, fy1) = source
    scale = face_height / ((fy1 - fy0) * patch.shape[0])
    size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
    image = Image.fromarray(patch).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        fx0, fx1 = 1 - fx1, 1 - fx0
    pixels = np.asarray(image).astype(np.float64)
    if pixels.ndim == 2:
        if rng.random() < 0.5:
            tone = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))])
            pixels = pixels[..., None] * tone / tone.max()
        else:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
    w, h = size
    return pixels, (fx0 * w, fy0 * h, fx1 * w, fy1 * h)


def paste(scene: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    h, w = patch.shape[:2]
    ramp_y = np.clip(np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / max(1.0, FEATHER * h), 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / max(1.0, FEATHER * w), 0, 1)
    alpha = np.outer(ramp_y, ramp_x)[..., None]
    region = scene[top:top + h, left:left + w].astype(np.float64)
    scene[top:top + h, left:left + w] = np.rint(alpha * patch + (1 - alpha) * region).clip(0, 255).astype(np.uint8)


def composite(photos, sources, size, rng) -> tuple[np.ndarray, list[dict]]:
    scene = scene_crop(photos[rng.integers(len(photos))], size, rng).copy()
    planted, taken = [], []
    for _ in range(rng.integers(3, 7)):
        face_height = float(np.exp(rng.uniform(*np.log(FACE_HEIGHTS))))
        kind = KINDS[rng.integers(len(KINDS))]
        group = sources[kind]
        patch, (bx0, by0, bx1, by1) = render_face(kind, group[rng.integers(len(group))], face_height, rng)
        h, w = patch.shape[:2]
        if w >= size[0] or h >= size[1]:
            continue
        for _attempt in range(50):
            left, top = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
            rect = (left, top, left + w, top + h)
            if all(iou(rect, other) == 0 for other in taken):
                break
        else:
            continue
        taken.append(rect)
        paste(scene, patch, left, top)
        planted.append({"box": (left + bx0, top + by0, left + bx1, top + by1), "height": by1 - by0, "kind": kind})
    return scene, planted


# -- scoring --------------------------------------------------------------------------------------------
def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(planted: list[dict], boxes: list) -> tuple[list[float], int]:
    """The best IoU of each planted face under greedy one-to-one matching, and the unmatched detections."""
    pairs = sorted(((iou(p["box"], d), i, j) for i, p in enumerate(planted) for j, d in enumerate(boxes)),
                   reverse=True)
    best, used_p, used_d = [0.0] * len(planted), set(), set()
    for value, i, j in pairs:
        if value < MATCH_IOU:
            break
        if i not in used_p and j not in used_d:
            best[i] = value
            used_p.add(i)
            used_d.add(j)
    return best, len(boxes) - len(used_d)


def share(hits: list[bool]) -> str:
    return f"{sum(hits) / len(hits):.3f} ({sum(hits)}/{len(hits)})" if hits else "-"


# -- the run --------------------------------------------------------------------------------------------
def evaluate(detector: FaceDetector, data, *, again: bool = False) -> tuple[list[dict], list[float], int]:
    """Per planted face: its record plus found / tight (and found again after fill / mosaic); the ms per
    image; the false detections."""
    detector.detect(data[0][0])  # warm-up: the first run allocates ORT's buffers for this size
    rows, times, false = [], [], 0
    for rgb, planted in data:
        started = time.perf_counter()
        faces = detector.detect(rgb)
        times.append((time.perf_counter() - started) * 1000)
        best, unmatched = match(planted, [f.box for f in faces])
        false += unmatched
        after = {method: match(planted, [f.box for f in detector.detect(anonymise(rgb, faces, method))])[0]
                 for method in ("fill", "mosaic")} if again else {}
        for i, face in enumerate(planted):
            rows.append({**face, "found": best[i] >= MATCH_IOU, "tight": best[i] >= 0.5,
                         **{method: values[i] >= MATCH_IOU for method, values in after.items()}})
    return rows, times, false


def bucket_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi - 1} px" if hi < 10_000 else f"{lo}+ px"


def recall_line(label, sel) -> tuple:
    found = [f for f in sel if f["found"]]
    return (label, len(sel), share([f["found"] for f in sel]), share([f["tight"] for f in sel]),
            share([f["fill"] for f in found]), share([f["mosaic"] for f in found]))


def run(images: int, seed: int, small: int, large: int) -> None:
    rng = np.random.default_rng(seed)
    photos, sources = scenes(), face_sources()
    data = [composite(photos, sources, SIZE, rng) for _ in range(images)]
    print(f"{images} composites of {SIZE[0]}x{SIZE[1]}, {sum(len(p) for _, p in data)} faces; "
          f"FaceDetector(threshold={DEFAULT_THRESHOLD}, max_side={DEFAULT_MAX_SIDE}); {load()}", flush=True)

    detector = FaceDetector()
    rows, times, false = evaluate(detector, data, again=True)
    context = [f for f in rows if f["kind"] in WITH_CONTEXT]
    table = [recall_line(bucket_label(lo, hi), [f for f in context if lo <= f["height"] < hi]) for lo, hi in BUCKETS]
    table.append(recall_line("**all >= 20 px, with context**", context))
    table.append(recall_line("all >= 20 px, every source (incl. bare crops)", rows))
    header = ("faces", "planted", "recall", "recall IoU>=0.5", "again fill", "again mosaic")
    print_table(f"faces with context (astronaut, lfw in a head) by height; found: IoU >= {MATCH_IOU}; again: share "
                "of the found faces found again after anonymise(image, detections)", header, table)
    print_table("by source", header, [recall_line(f"{kind}, {bucket_label(lo, hi)}",
                                                  [f for f in rows if f["kind"] == kind and lo <= f["height"] < hi])
                                      for kind in KINDS for lo, hi in BUCKETS])
    print_table("speed and false positives (default detector, one upright array per call)",
                ("images", "fp/image", "median ms", "p95 ms"),
                [(images, f"{false / images:.2f}", f"{statistics.median(times):.1f}",
                  f"{statistics.quantiles(times, n=20)[18]:.1f}")])

    bench_thresholds(data, images)
    print(f"\nimage sizes; {load()}", flush=True)
    bench_sizes(seed, photos, sources, data, (rows, times, false), small, large)
    detector.close()


def bench_thresholds(data, images: int) -> None:
    sweeper = FaceDetector(threshold=min(SWEEP))
    lows = [(planted, [(f.box, f.score) for f in sweeper.detect(rgb)]) for rgb, planted in data]
    sweeper.close()
    sweep = []
    for threshold in SWEEP:
        context, small, every, unmatched = [], [], [], 0
        for planted, low in lows:
            best, extra = match(planted, [box for box, score in low if score > threshold])
            unmatched += extra
            every += [b >= MATCH_IOU for b in best]
            context += [b >= MATCH_IOU for b, p in zip(best, planted) if p["kind"] in WITH_CONTEXT]
            small += [b >= MATCH_IOU for b, p in zip(best, planted) if p["kind"] in WITH_CONTEXT and p["height"] < 32]
        sweep.append((f"{threshold:.1f}" + (" (default)" if threshold == DEFAULT_THRESHOLD else ""),
                      share(context), share(small), share(every), f"{unmatched / images:.2f}"))
    print_table("threshold sweep (same images)", ("threshold", "recall, with context", "with context, 20-31 px",
                                                  "recall, every source", "fp/image"), sweep)


def bench_sizes(seed: int, photos, sources, data, default_result, small: int, large: int) -> None:
    """Faces with context at other composite sizes and max_side values: recall by height, fp, time."""
    cases = [(SIZE, data, side, None) for side in MAX_SIDES]
    if small:
        rng = np.random.default_rng(seed + 1)
        cases.insert(0, ((640, 480), [composite(photos, sources, (640, 480), rng) for _ in range(small)],
                         DEFAULT_MAX_SIDE, None))
    if large:
        rng = np.random.default_rng(seed + 2)
        big = [composite(photos, sources, (2048, 1536), rng) for _ in range(large)]
        cases += [((2048, 1536), big, DEFAULT_MAX_SIDE, None), ((2048, 1536), big, None, None)]
    table = []
    for size, images, side, _ in cases:
        if size == SIZE and side == DEFAULT_MAX_SIDE:
            rows, times, false = default_result
        else:
            with FaceDetector(max_side=side) as detector:
                rows, times, false = evaluate(detector, images)
        context = [f for f in rows if f["kind"] in WITH_CONTEXT]
        by_height = (share([f["found"] for f in context if lo <= f["height"] < hi]) for lo, hi in BUCKETS)
        table.append((f"{size[0]}x{size[1]}", f"{side}" + (" (default)" if side == DEFAULT_MAX_SIDE else ""),
                      len(images), *by_height,
                      share([f["found"] for f in context]), f"{false / len(images):.2f}",
                      f"{statistics.median(times):.1f}", f"{statistics.quantiles(times, n=20)[18]:.1f}"))
    print_table("faces with context by composite size and max_side (recall: IoU >= 0.3)",
                ("composite", "max_side", "images", *(bucket_label(lo, hi) for lo, hi in BUCKETS), "all >= 20 px",
                 "fp/image", "median ms", "p95 ms"), table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48, help="composites of 1024x768 (default 48)")
    parser.add_argument("--small", type=int, default=24, help="composites of 640x480 (default 24; 0 skips)")
    parser.add_argument("--large", type=int, default=8, help="composites of 2048x1536 (default 8; 0 skips)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(f"faces benchmark on {machine()}; {load()}", flush=True)
    run(args.images, args.seed, args.small, args.large)
    print(f"\nend; {load()}")


if __name__ == "__main__":
    main()
