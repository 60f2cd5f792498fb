"""What a backbone is: its weights plus its preprocessing plus its identity (no torch import).

:class:`Backbone` is the spec the registry (registry.py) holds; :meth:`Backbone.fingerprint` is the key
of every feature cache, so vectors of different weights, preprocessing or precision never mix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..errors import InputError
from .weights import ResolvedWeights, WeightSource, locate, resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Version of pixelmine's decode + resize code (imaging/decode.py). Bump it when that code changes the
# pixels a network sees: every cached feature is then recomputed instead of silently mixed.
DECODE_VERSION = 1
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels are prepared for a backbone: resize the shorter side, centre-crop, normalise."""

    input_size: int = 224  # side of the square crop fed to the network, pixels
    resize: int = 256  # shorter side after resizing, before the centre crop, pixels
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, on the 0..1 scale
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" or "bicubic" (antialiased, as torchvision/timm on PIL)

    def __post_init__(self):
        if self.interpolation not in ("bilinear", "bicubic"):
            raise InputError(f"The 'interpolation' parameter of Preprocessing must be 'bilinear' or 'bicubic'. "
                             f"Got {self.interpolation!r} instead.")
        if not 0 < self.input_size <= self.resize:
            raise InputError(f"Preprocessing needs 0 < input_size <= resize; got input_size={self.input_size}, "
                             f"resize={self.resize}.")


@dataclass(frozen=True)
class Backbone:
    """A registered feature extractor. ``builder(spec, weights)`` returns a torch module that maps a
    normalised float batch (N, 3, H, W) to ``(features (N, D), logits (N, C) or None)``."""

    name: str
    description: str
    builder: Callable = field(repr=False, compare=False)
    weights: tuple[WeightSource, ...] = ()  # where its weights may come from, in order of preference
    preprocessing: Preprocessing = Preprocessing()
    feature_dim: int | None = None  # D; None when only known once built (library models)
    num_classes: int = 0  # classes of its classifier head (1000 for ImageNet-1k); 0 = no head, no tags
    labels: Callable[[], list[str]] | None = field(default=None, repr=False, compare=False)
    source: str = ""  # "torchvision", "timm", "test"
    params_m: float | None = None  # millions of parameters, for the listing

    def label_names(self) -> list[str]:
        """Names of the classifier's classes (ImageNet-1k for the pretrained backbones), or []."""
        return list(self.labels()) if self.labels is not None else []

    def locate_weights(self, *, allow_download: bool | None = None) -> ResolvedWeights:
        """Which weights would be used (no download, no torch import)."""
        return locate(self.weights, allow_download=allow_download, what=f"backbone {self.name!r}")

    def resolve_weights(self, *, allow_download: bool | None = None) -> ResolvedWeights:
        """Find the weights, downloading them when needed and allowed."""
        return resolve(self.weights, allow_download=allow_download, what=f"backbone {self.name!r}")

    def fingerprint(self, weights: ResolvedWeights | None = None, precision: str = "fp32") -> str:
        """Hash of everything that determines the vectors: name, weights identity, preprocessing, decode
        code version and numeric precision. Feature caches are keyed by it, so vectors never mix."""
        if precision not in PRECISIONS:
            raise InputError(f"The 'precision' parameter must be one of {', '.join(PRECISIONS)}. "
                             f"Got {precision!r} instead.")
        weights = weights or self.locate_weights()
        payload = {"name": self.name, "weights": weights.identity, "preprocessing": asdict(self.preprocessing),
                   "decode": DECODE_VERSION, "precision": precision}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
