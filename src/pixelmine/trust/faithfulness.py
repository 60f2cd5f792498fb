"""Does the map mean something? Deletion and insertion curves against a random map and a centred blob, and
a sanity check that a randomised head gives other maps.

- **Deletion** (Petsiuk et al. 2018, RISE): the grid cells of the network's view are removed in the map's
  order, most important first, and the probability of the explained class is followed; a faithful map makes
  it fall fast, so the area under the curve is *low*. **Insertion** starts from the removed image and adds
  the cells back in the same order; the area is *high* for a faithful map.
- Pixels are removed in the order of the map *upsampled to the crop* (bilinear, as the overlay shows it):
  removal follows the map's smooth shape, not its grid's squares. The random map and the centred blob are
  drawn at the same grid and upsampled the same way, so all three remove blobs of the same kind.
- "Removed" means replaced by a strongly blurred copy of the image, for both curves (Fong & Vedaldi's
  "meaningful perturbation"): black or flat patches are far from anything the network saw in training and
  are a signal of their own (on textures, any flat patch looks like a defect), a blur takes the detail away
  and keeps the colours. Deletion ends, and insertion starts, at the fully blurred image.
- The same curves for a **random** order (a strong baseline, as pytorch-grad-cam's tutorial shows) and a
  **centred blob** (photographers centre their subject), on the same images, in the same run.
- **Sanity check** (Adebayo et al. 2018): the head's weights replaced by random ones should change the map;
  the Spearman rank correlation between the real and the randomised map is reported (low is good).

    card = measure(model, files)          # Faithfulness: areas per map, ratios, correlation
    card.to_dict()                        # saved as models/<name>/faithfulness.json by the CLI
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError

BASELINES = ("map", "random", "centre")
# The benchmark's targets, stated once: what a card calls passing.
MIN_DELETION_GAIN = 0.30  # deletion area at least 30 % below the random map's
MIN_INSERTION_GAIN = 0.30  # insertion area at least 30 % above the random map's
MAX_RANDOM_HEAD_CORRELATION = 0.3


@dataclass
class Faithfulness:
    model: str
    method: str
    images: int
    steps: int
    grid: list[int]
    deletion: dict[str, float]  # area under the deletion curve, per map (lower = more faithful)
    insertion: dict[str, float]  # area under the insertion curve, per map (higher = more faithful)
    deletion_curves: dict[str, list[float]] = field(default_factory=dict)  # mean probability per step
    insertion_curves: dict[str, list[float]] = field(default_factory=dict)
    random_head_correlation: float = float("nan")  # median Spearman rho, real vs randomised-head map
    seconds: float = 0.0
    errors: int = 0  # files that could not be read

    @property
    def deletion_gain(self) -> float:
        """How much lower the map's deletion area is than the random map's (0.3 = 30 % lower)."""
        return 1.0 - self.deletion["map"] / self.deletion["random"] if self.deletion["random"] > 0 else 0.0

    @property
    def insertion_gain(self) -> float:
        return self.insertion["map"] / self.insertion["random"] - 1.0 if self.insertion["random"] > 0 else 0.0

    @property
    def checks(self) -> dict[str, bool]:
        return {
            "deletion at least 30% below random": self.deletion_gain >= MIN_DELETION_GAIN,
            "deletion below the centred blob": self.deletion["map"] < self.deletion["centre"],
            "insertion at least 30% above random": self.insertion_gain >= MIN_INSERTION_GAIN,
            "randomised head changes the map (rank correlation <= 0.3)":
                bool(self.random_head_correlation <= MAX_RANDOM_HEAD_CORRELATION),
        }

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update({"deletion_gain": self.deletion_gain, "insertion_gain": self.insertion_gain,
                    "checks": self.checks})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Faithfulness":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def table(self) -> list[tuple[str, str, str]]:
        """(map, deletion area, insertion area) rows for a printed or HTML card."""
        names = {"map": f"{self.method} map", "random": "random map", "centre": "centred blob"}
        return [(names[k], f"{self.deletion[k]:.3f}", f"{self.insertion[k]:.3f}") for k in BASELINES]


def blurred(pixels: np.ndarray) -> np.ndarray:
    """A strongly blurred copy of uint8 crops (n, S, S, 3): what a removed cell shows."""
    from PIL import Image, ImageFilter

    radius = max(2.0, pixels.shape[1] / 16)
    return np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius))) for p in pixels])


def centre_blob(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * 0.25 ** 2))


def pixel_ranks(grid_map: np.ndarray, size: int, rng) -> np.ndarray:
    """(S, S) int: each crop pixel's place in the removal order of ``grid_map`` upsampled to the crop (0 first);
    ties (flat regions) are broken at random."""
    from PIL import Image

    upsampled = np.asarray(Image.fromarray(np.asarray(grid_map, np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    jitter = rng.random((size, size)) * 1e-9 * (np.ptp(upsampled) or 1.0)
    ranks = np.empty(size * size, dtype=np.int64)
    ranks[np.argsort(-(upsampled + jitter).ravel(), kind="stable")] = np.arange(size * size)
    return ranks.reshape(size, size)


def curve_images(original: np.ndarray, removed: np.ndarray, ranks: np.ndarray, steps: int):
    """Deletion and insertion images (steps - 1 interior points each) for one crop and one removal order."""
    total = ranks.size
    deletion, insertion = [], []
    for t in range(1, steps):
        chosen = (ranks < round(t / steps * total))[..., None]
        deletion.append(np.where(chosen, removed, original))
        insertion.append(np.where(chosen, original, removed))
    return deletion, insertion


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def area(curve) -> float:
    values = np.asarray(curve, dtype=np.float64)
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def measure(model, files, *, steps: int = 10, seed: int = 0, progress=False) -> Faithfulness:
    """The faithfulness card of ``model``'s maps of its predicted class on image ``files``."""
    from ..progress import resolve_progress
    from .explain import Explainer

    if steps < 2:
        raise InputError(f"steps must be >= 2; got {steps!r}")
    files = [str(f) for f in files]
    if not files:
        raise InputError("no images to measure the explanations on")
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    curves = {kind: {name: [] for name in BASELINES} for kind in ("deletion", "insertion")}
    correlations, errors, grid = [], 0, None
    report, close = resolve_progress(progress, "faithfulness", unit="img")
    done = 0
    with Explainer(model) as explainer:
        try:
            for rows, pixels, chunk_errors in explainer.decode(files):
                errors += len(chunk_errors)
                done += len(rows) + len(chunk_errors)
                if not rows:
                    continue
                scores, probs, maps = explainer.scores_for_pixels(pixels)
                grid = scores.shape[-2:]
                size = pixels.shape[1]
                removed = blurred(pixels)
                random_scores = _randomised_head_scores(explainer, maps, rng)
                for k in range(len(pixels)):
                    target = int(np.argmax(probs[k]))
                    correlations.append(spearman(scores[k, target], random_scores[k, target]))
                    orders = {"map": scores[k, target], "random": rng.random(grid), "centre": centre_blob(grid)}
                    images, spans = [pixels[k], removed[k]], {}
                    for name, grid_map in orders.items():
                        deletion, insertion = curve_images(pixels[k], removed[k], pixel_ranks(grid_map, size, rng),
                                                           steps)
                        spans[name] = len(images)
                        images.extend(deletion + insertion)
                    p = explainer.probabilities_for_pixels(np.stack(images))[:, target]
                    full, empty = p[0], p[1]
                    for name, first in spans.items():
                        interior = p[first:first + 2 * (steps - 1)]
                        curves["deletion"][name].append([full, *interior[:steps - 1], empty])
                        curves["insertion"][name].append([empty, *interior[steps - 1:], full])
                report(done, len(files))
        finally:
            close()
    if not correlations:
        raise InputError(f"none of the {len(files)} images could be read; nothing to measure")
    mean_curves = {kind: {name: np.mean(np.asarray(c, dtype=np.float64), axis=0).tolist()
                          for name, c in per.items()} for kind, per in curves.items()}
    return Faithfulness(
        model=model.name, method=explainer.method, images=len(correlations), steps=steps, grid=list(grid),
        deletion={name: float(np.mean([area(c) for c in curves["deletion"][name]])) for name in BASELINES},
        insertion={name: float(np.mean([area(c) for c in curves["insertion"][name]])) for name in BASELINES},
        deletion_curves=mean_curves["deletion"], insertion_curves=mean_curves["insertion"],
        random_head_correlation=float(np.median(correlations)), seconds=time.perf_counter() - started,
        errors=errors)


def _randomised_head_scores(explainer, maps, rng) -> np.ndarray:
    """The scores the same feature maps give under a head of random weights (same shape, same scale)."""
    real = explainer.part_weights()
    random = [rng.standard_normal(w.shape) * (np.std(w) or 1.0) for w in real]
    return explainer.crop_scores(maps, random)
