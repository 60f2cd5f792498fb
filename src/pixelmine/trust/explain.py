"""Where a model looks: class activation maps for every image file, a contrastive map, overlays.

Two ways to a map, one result:

- **CAM** (a probe with a linear head, ``logreg`` / ``svm``): the class score is linear in the pooled features
  and the pooled features are the mean of the last feature map, so the score is exactly the sum over
  positions of the head's (standardised) weights applied to each position's feature vector. No gradients:
  the map comes from the embedder's feature-map output, on the same ONNX graph (fp32 or int8) that embeds
  the model's images. Summed over the grid it gives back the class score (less the bias).
- **Grad-CAM** (a fine-tuned network, or a backbone whose features are not the mean of its map): through
  PyTorch, the gradient of the class logit with respect to the last feature map, averaged over positions,
  weighs the map's channels (Selvaraju et al. 2017). For a linear head on mean-pooled features it equals CAM.

The *class map* shows what speaks for the class; the *contrastive map* what speaks for it rather than the
runner-up (the scores' difference). Both are kept at the network's grid (row 0 at the top of the upright
image), the positive part scaled to [0, 1]; ``scores`` keeps the signed per-position scores.

    explanations = explain(model, ["a.jpg", "b.png"], label=None)   # the predicted class of each image
    explanations[0].to_dict()                                      # class, probability, map as lists
    save_overlay(explanations[0], "a-explained.png")               # the map over the upright image
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

POOLING_TOLERANCE = 2e-3  # relative: features within this of the map's mean are "mean-pooled" (int8 noise too)
MIN_OVERLAY_SIDE = 256  # pixels
CHUNK = 32  # files embedded at a time: feature maps of 32 images stay under ~50 MB


@dataclass
class Explanation:
    """One image's explanation; ``error`` is set (and the maps are None) when the file could not be read."""

    path: str
    image_id: str | None = None
    label: str | None = None  # the class explained
    probability: float | None = None  # the model's probability of that class
    predicted: str | None = None
    runner_up: str | None = None  # the other class of the contrastive map
    runner_up_probability: float | None = None
    class_map: np.ndarray | None = None  # (h, w) in [0, 1]
    contrastive_map: np.ndarray | None = None  # (h, w) in [0, 1]: label rather than runner_up
    scores: np.ndarray | None = None  # (h, w) signed per-position class scores (the map before scaling)
    method: str | None = None  # "cam" or "grad-cam"
    box: tuple[float, float, float, float] | None = None  # where the network's view lies on the upright image
    image_size: tuple[int, int] | None = None  # upright (width, height)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, *, maps: bool = True) -> dict:
        out = {"path": self.path, "image_id": self.image_id, "error": self.error}
        if not self.ok:
            return out
        out.update({"label": self.label, "probability": round(float(self.probability), 6),
                    "predicted": self.predicted, "runner_up": self.runner_up,
                    "runner_up_probability": None if self.runner_up_probability is None
                    else round(float(self.runner_up_probability), 6),
                    "method": self.method, "grid": list(self.class_map.shape),
                    "box": [round(v, 2) for v in self.box], "image_size": list(self.image_size)})
        if maps:
            out["map"] = np.round(self.class_map, 4).tolist()
            out["contrastive_map"] = None if self.contrastive_map is None else np.round(self.contrastive_map, 4).tolist()
        return out


def positive_unit(scores: np.ndarray) -> np.ndarray:
    """The positive part of ``scores`` scaled so its maximum is 1 (all zeros when nothing is positive)."""
    positive = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    peak = positive.max() if positive.size else 0.0
    return (positive / peak if peak > 0 else positive).astype(np.float32)


def resolve_label(model, label: str | None) -> int | None:
    if label is None:
        return None
    if label not in model.classes:
        raise InputError(f"model {model.name!r} has no class {label!r}; its classes are: "
                         f"{', '.join(map(str, model.classes))}")
    return model.classes.index(label)


# -- per-position class scores -------------------------------------------------------------------------
def cam_scores(weights: np.ndarray, feature_map: np.ndarray) -> np.ndarray:
    """(n, K, h, w): the linear head ``weights`` (K, C) at every position of ``feature_map`` (n, C, h, w),
    divided by the positions (the mean pooling), so the grid sums to the class score less its bias."""
    n, channels, h, w = feature_map.shape
    return np.einsum("kc,nchw->nkhw", weights, feature_map.astype(np.float64), optimize=True) / (h * w)


def is_mean_pooled(features: np.ndarray, feature_map: np.ndarray) -> bool:
    pooled = feature_map.mean(axis=(2, 3))
    if pooled.shape != features.shape:
        return False
    scale = np.linalg.norm(features) or 1.0
    return float(np.linalg.norm(pooled - features) / scale) <= POOLING_TOLERANCE


def resample_scores(scores: np.ndarray, source_box, target_box, target_grid: tuple[int, int]) -> np.ndarray:
    """Per-cell scores (..., h, w) over ``source_box`` moved onto the ``target_grid`` over ``target_box``
    (image coordinates): each target cell takes the source's score density at its centre times its area, so
    two parts seeing different framings add up in one grid. Outside the source box the density is 0."""
    h, w = scores.shape[-2:]
    th, tw = target_grid
    sl, st, sr, sb = source_box
    tl, tt, tr, tb = target_box
    if (h, w) == (th, tw) and np.allclose(source_box, target_box):
        return scores
    ys = tt + (np.arange(th) + 0.5) * (tb - tt) / th
    xs = tl + (np.arange(tw) + 0.5) * (tr - tl) / tw
    # continuous source cell coordinates of the target centres
    u = (ys - st) / ((sb - st) / h) - 0.5
    v = (xs - sl) / ((sr - sl) / w) - 0.5
    inside = ((ys >= st) & (ys <= sb))[:, None] & ((xs >= sl) & (xs <= sr))[None, :]
    u0 = np.clip(np.floor(u).astype(int), 0, h - 1)
    v0 = np.clip(np.floor(v).astype(int), 0, w - 1)
    u1, v1 = np.clip(u0 + 1, 0, h - 1), np.clip(v0 + 1, 0, w - 1)
    fu, fv = np.clip(u - u0, 0, 1)[:, None], np.clip(v - v0, 0, 1)[None, :]
    density = scores / (((sb - st) / h) * ((sr - sl) / w))
    sampled = (density[..., u0[:, None], v0[None, :]] * (1 - fu) * (1 - fv)
               + density[..., u1[:, None], v0[None, :]] * fu * (1 - fv)
               + density[..., u0[:, None], v1[None, :]] * (1 - fu) * fv
               + density[..., u1[:, None], v1[None, :]] * fu * fv)
    return sampled * inside * ((tb - tt) / th) * ((tr - tl) / tw)


# -- geometry ----------------------------------------------------------------------------------------
def upright_size(path: str) -> tuple[int, int]:
    """(width, height) of the image as it is shown: EXIF orientations 5-8 swap the sides."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def view_box(spec, size: tuple[int, int]) -> tuple[float, float, float, float]:
    from ..imaging.decode import crop_box

    return crop_box(size, input_size=spec.preprocessing.input_size, resize=spec.preprocessing.resize)


# -- explaining ----------------------------------------------------------------------------------------
@dataclass
class _Batch:
    """What one chunk of files gives: per file row, class scores on the first part's grid and probabilities."""

    rows: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)  # (K, h, w) per row
    probs: list[np.ndarray] = field(default_factory=list)  # (K,) per row
    maps: list[list[np.ndarray]] = field(default_factory=list)  # per row, each part's (C, h, w) feature map
    errors: dict[int, str] = field(default_factory=dict)


class Explainer:
    """The resident machinery to explain many files with one model: its embedders (CAM) or its PyTorch
    network (Grad-CAM). ``close()`` it, or use it as a context manager."""

    def __init__(self, model, *, method: str = "auto"):
        from .network import model_backbones

        if method not in ("auto", "cam", "grad-cam"):
            raise InputError(f"method must be 'auto', 'cam' or 'grad-cam'; got {method!r}")
        self.model = model
        self.specs = model_backbones(model)
        if model.kind != "finetune":
            from .heads import linear_scores

            self.linear = linear_scores(model._probe_bundle()["head"])  # InputError for a k-NN head
        self.method = ("grad-cam" if model.kind == "finetune" else "cam") if method == "auto" else method
        if self.method == "cam" and model.kind == "finetune":
            raise InputError("a fine-tuned network is explained with Grad-CAM: method='grad-cam' (or 'auto')")
        self._embedders = None
        self._network = None
        self._pixels = None

    # resources
    def embedders(self) -> list:
        if self._embedders is None:
            # the same sessions the perturbed crops run through (faithfulness): one network load, not two
            self._embedders = self.on_pixels().embedders()
            for part, spec in zip(self._embedders, self.specs):
                if not part.has_map:
                    self.close()
                    raise InputError(f"backbone {spec.name} exposes no convolutional feature map (e.g. a vision "
                                     "transformer); explanations need a CNN backbone")
        return self._embedders

    def network(self):
        if self._network is None:
            from .network import classifier_network

            self._network = classifier_network(self.model)
            self._network.keep_maps = True
        return self._network

    def close(self) -> None:
        if self._pixels is not None:
            self._pixels.close()
        self._embedders = None
        self._network = None
        self._pixels = None

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # public
    def explain(self, paths, *, label: str | None = None, contrastive: bool = True, progress=False) -> list[Explanation]:
        """One :class:`Explanation` per file, in order; files that cannot be read get ``error`` set."""
        from ..learn.embed import file_ids
        from ..progress import resolve_progress

        wanted = resolve_label(self.model, label)
        files = [os.fspath(p) for p in paths]
        ids, hash_errors = file_ids(files)
        results: list[Explanation] = []
        report, close = resolve_progress(progress, "explain", unit="img")
        try:
            for start in range(0, len(files), CHUNK):
                chunk = files[start:start + CHUNK]
                batch = self.scores_for_files(chunk)
                by_row = {row: k for k, row in enumerate(batch.rows)}
                for row, path in enumerate(chunk):
                    image_id = ids[start + row]
                    if row not in by_row:
                        message = hash_errors.get(start + row) or batch.errors.get(row) or "the file cannot be read"
                        results.append(Explanation(os.path.abspath(path), image_id, error=_decode_message(message)))
                        continue
                    k = by_row[row]
                    results.append(self._explanation(path, image_id, batch.scores[k], batch.probs[k], wanted,
                                                     contrastive))
                report(min(start + CHUNK, len(files)), len(files))
        finally:
            close()
        return results

    def _explanation(self, path, image_id, scores, probs, wanted, contrastive) -> Explanation:
        classes = self.model.classes
        order = np.argsort(-probs, kind="stable")
        predicted = int(order[0])
        target = predicted if wanted is None else wanted
        other = int(order[1] if order[0] == target else order[0]) if len(classes) > 1 else None
        size = upright_size(path)
        return Explanation(
            os.path.abspath(path), image_id, label=str(classes[target]), probability=float(probs[target]),
            predicted=str(classes[predicted]),
            runner_up=None if other is None else str(classes[other]),
            runner_up_probability=None if other is None else float(probs[other]),
            class_map=positive_unit(scores[target]),
            contrastive_map=positive_unit(scores[target] - scores[other]) if contrastive and other is not None else None,
            scores=scores[target].astype(np.float32), method=self.method,
            box=view_box(self.specs[0], size), image_size=size)

    def scores_for_files(self, files: list[str]) -> _Batch:
        if self.method == "cam":
            return self._cam_for_files(files)
        return self._gradcam_for_files(files)

    # CAM, on the embedders
    def _cam_for_files(self, files: list[str]) -> _Batch:
        outputs = [embedder.embed_files(files, with_map=True) for embedder in self.embedders()]
        batch = _Batch()
        for out in outputs:
            for row, message in out.errors.items():
                batch.errors.setdefault(row, message)
        common = sorted(set.intersection(*(set(out.rows) for out in outputs)) - set(batch.errors))
        if not common:
            return batch
        positions = [{row: k for k, row in enumerate(out.rows)} for out in outputs]
        features = [out.features[[pos[r] for r in common]] for out, pos in zip(outputs, positions)]
        maps = [out.feature_map[[pos[r] for r in common]] for out, pos in zip(outputs, positions)]
        if not all(is_mean_pooled(f, m) for f, m in zip(features, maps)):
            # the features are not the plain mean of the map: only gradients give a faithful map
            self.method = "grad-cam"
            return self._gradcam_for_files(files)
        probs, _ = self.model.predict_features(np.hstack(features))
        sizes = [upright_size(files[r]) for r in common]
        batch.rows = common
        batch.probs = list(probs)
        batch.scores = [self._combine_parts([m[k] for m in maps], sizes[k]) for k in range(len(common))]
        batch.maps = [[m[k] for m in maps] for k in range(len(common))]
        return batch

    # on crops the caller already has (faithfulness curves perturb them)
    def decode(self, files: list[str]):
        """Yield ``(rows, crops, {row: error})`` batches of the crops the model's network sees."""
        yield from self.on_pixels().decode(files)

    def on_pixels(self):
        if self._pixels is None:
            from .pixels import ModelOnPixels

            self._pixels = ModelOnPixels(self.model)
        return self._pixels

    def probabilities_for_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The model's probabilities (n, K) for crops (n, S, S, 3) as :meth:`decode` gives them."""
        return self.on_pixels().probabilities(pixels)

    def scores_for_pixels(self, pixels: np.ndarray):
        """(scores (n, K, h, w), probs (n, K), each part's feature maps) for crops seen by every part."""
        if self.method == "grad-cam":
            return gradcam(self.network(), pixels)
        outputs = [embedder.embed_pixels(pixels, with_map=True) for embedder in self.embedders()]
        maps = [out.feature_map for out in outputs]
        probs = self.model.predict_features(np.hstack([out.features for out in outputs]))[0]
        return self.crop_scores(maps), probs, maps

    def crop_scores(self, maps: list[np.ndarray], weights: list[np.ndarray] | None = None) -> np.ndarray:
        """(n, K, h, w) linear scores of parts' feature maps (n, C_p, h_p, w_p) over one shared crop, on the
        first part's grid; ``weights`` (K, C_p) per part default to the head's (or the fine-tuned classifier's)."""
        weights = weights or self.part_weights()
        size = self.specs[0].preprocessing.input_size
        box = (0.0, 0.0, float(size), float(size))
        grid = maps[0].shape[-2:]
        total = None
        for fmap, w in zip(maps, weights):
            part = resample_scores(cam_scores(w, fmap), box, box, grid)
            total = part if total is None else total + part
        return total

    def part_weights(self) -> list[np.ndarray]:
        """The linear head's weights (K, C_p) for each part's channels, in feature order (a fine-tuned
        network: its classifier's)."""
        if self.model.kind == "finetune":
            import torch

            state = torch.load(self.model.dir / "weights.pt", map_location="cpu", weights_only=True)
            return [state["classifier.weight"].double().numpy()]
        widths = [spec.feature_dim for spec in self.specs]
        edges = np.cumsum([0] + widths)
        return [self.linear.weights[:, a:b] for a, b in zip(edges[:-1], edges[1:])]

    def _combine_parts(self, part_maps: list[np.ndarray], size, weights: list[np.ndarray] | None = None) -> np.ndarray:
        """(K, h, w) scores on the first part's grid, the other parts' scores resampled onto it."""
        weights = weights or self.part_weights()
        target_box = view_box(self.specs[0], size)
        grid = part_maps[0].shape[-2:]
        total = None
        for spec, fmap, w in zip(self.specs, part_maps, weights):
            part = cam_scores(w, fmap[None])[0]
            part = resample_scores(part, view_box(spec, size), target_box, grid)
            total = part if total is None else total + part
        return total

    # Grad-CAM, through PyTorch
    def _gradcam_for_files(self, files: list[str]) -> _Batch:
        batch = _Batch()
        network = self.network()
        decoder = self.model.embedder() if self.model.kind == "finetune" else self.embedders()[0]
        try:
            for rows, pixels, errors in decoder.decode_files(files, batch_size=CHUNK):
                batch.errors.update(errors)
                if not rows:
                    continue
                scores, probs, maps = gradcam(network, pixels)
                batch.rows.extend(rows)
                batch.scores.extend(scores)
                batch.probs.extend(probs)
                batch.maps.extend([[m[k] for m in maps] for k in range(len(rows))])
        finally:
            if self.model.kind == "finetune":
                decoder.close()
        return batch


def gradcam(network, pixels: np.ndarray, *, chunk: int = 8):
    """Grad-CAM scores (n, K, h, w) of every class, probabilities (n, K) and the parts' feature maps for
    uint8 crops (n, S, S, 3), through ``network`` (a :class:`~.network.ClassifierNetwork`).

    Every class needs its own backward pass; the forward is shared. With several parts (``A+B`` seeing the
    same crop) each part's map is weighed by its own gradients and the grids are summed (resampled)."""
    import torch

    all_scores, all_probs, all_maps = [], [], []
    for start in range(0, len(pixels), chunk):
        x = torch.from_numpy(np.ascontiguousarray(pixels[start:start + chunk])).permute(0, 3, 1, 2).float() / 255.0
        x.requires_grad_(True)
        with torch.enable_grad():
            log_probs = network(x)
            maps = network.feature_maps
            if not maps:
                raise InputError("the network exposes no convolutional feature map; explanations need a CNN backbone")
            class_scores = network.class_scores
            per_class = []
            for k in range(class_scores.shape[1]):
                grads = torch.autograd.grad(class_scores[:, k].sum(), maps, retain_graph=True)
                parts = [(g.mean(dim=(2, 3), keepdim=True) * m).sum(dim=1) for g, m in zip(grads, maps)]
                grid = parts[0].shape[-2:]
                total = parts[0]
                for extra in parts[1:]:
                    total = total + torch.nn.functional.interpolate(extra[:, None], size=grid, mode="bilinear",
                                                                    align_corners=False)[:, 0] \
                        * (extra.shape[-2] * extra.shape[-1]) / (grid[0] * grid[1])
                per_class.append(total.detach())
        all_scores.append(torch.stack(per_class, dim=1).double().numpy())
        all_probs.append(log_probs.detach().exp().double().numpy())
        all_maps.append([m.detach().numpy() for m in maps])
    scores = np.concatenate(all_scores)
    probs = np.concatenate(all_probs)
    maps = [np.concatenate([chunk_maps[p] for chunk_maps in all_maps]) for p in range(len(all_maps[0]))]
    return scores, probs, maps


def explain(model, paths, *, label: str | None = None, contrastive: bool = True, method: str = "auto",
            progress=False) -> list[Explanation]:
    """Explain ``model``'s prediction (or class ``label``) on each image file: see :class:`Explainer`."""
    from ..learn.predictions import expand_inputs

    entries = expand_inputs(paths)
    files = [path for path, problem in entries if problem is None]
    with Explainer(model, method=method) as explainer:
        done = iter(explainer.explain(files, label=label, contrastive=contrastive, progress=progress))
    return [next(done) if problem is None else Explanation(os.path.abspath(path), error=problem)
            for path, problem in entries]


def _decode_message(message: str) -> str:
    return message.split("; re-export")[0] + "; check the file, or re-export it as PNG or JPEG"


# -- overlays ------------------------------------------------------------------------------------------
def overlay(explanation: Explanation, *, contrastive: bool = False, max_side: int = 640):
    """The map drawn over the upright image (PIL RGB), the class and probability written on it; the part of
    the image the network does not see (outside its crop) is dimmed."""
    from PIL import Image, ImageDraw

    from ..imaging.decode import open_rgb

    if not explanation.ok:
        raise InputError(f"no explanation for {explanation.path}: {explanation.error}")
    chosen = explanation.contrastive_map if contrastive else explanation.class_map
    if chosen is None:
        raise InputError("this explanation has no contrastive map (the model has one class, or it was not asked for)")
    image = open_rgb(explanation.path)
    # small images are enlarged so the map and the caption stay legible
    scale = min(max_side, max(MIN_OVERLAY_SIDE, max(image.size))) / max(image.size)
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    left, top, right, bottom = (round(v * image.width / explanation.image_size[0]) if i % 2 == 0
                                else round(v * image.height / explanation.image_size[1])
                                for i, v in enumerate(explanation.box))
    base = np.asarray(image, dtype=np.float32)
    out = base * 0.45  # dimmed: outside the network's view
    box_w, box_h = max(1, right - left), max(1, bottom - top)
    heat = np.asarray(Image.fromarray(chosen.astype(np.float32), mode="F").resize((box_w, box_h),
                                                                                  Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colours = _colour_map(heat)
    alpha = (0.6 * heat)[..., None]
    y0, y1 = max(0, top), min(image.height, bottom)
    x0, x1 = max(0, left), min(image.width, right)
    region = base[y0:y1, x0:x1]
    heat_part = colours[y0 - top:y1 - top, x0 - left:x1 - left]
    alpha_part = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
    out[y0:y1, x0:x1] = region * (1 - alpha_part) + heat_part * alpha_part
    result = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    caption = f"{explanation.label} {explanation.probability:.0%}"
    if contrastive and explanation.runner_up is not None:
        caption += f" rather than {explanation.runner_up} {explanation.runner_up_probability:.0%}"
    _caption(ImageDraw.Draw(result), caption, result.width)
    return result


def _colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB float (blue, through green and yellow, to red): the 'turbo'-like ramp."""
    stops = np.array([[48, 18, 59], [40, 120, 240], [30, 200, 140], [240, 220, 40], [250, 90, 20], [122, 4, 3]],
                     dtype=np.float32)
    position = values * (len(stops) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(stops) - 2)
    frac = (position - low)[..., None]
    return stops[low] * (1 - frac) + stops[low + 1] * frac


def _caption(draw, text: str, width: int) -> None:
    from PIL import ImageFont

    size = max(11, min(22, width // 24))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(3, size // 4)
    draw.rectangle((0, 0, min(width, right - left + 2 * pad), bottom - top + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)


def save_overlay(explanation: Explanation, path: str | os.PathLike, *, contrastive: bool = False,
                 max_side: int = 640) -> Path:
    from ..fileio import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        overlay(explanation, contrastive=contrastive, max_side=max_side).save(tmp, format="PNG")
    return path


def overlay_png(explanation: Explanation, *, contrastive: bool = False, max_side: int = 640) -> bytes:
    import io

    buffer = io.BytesIO()
    overlay(explanation, contrastive=contrastive, max_side=max_side).save(buffer, format="PNG")
    return buffer.getvalue()
