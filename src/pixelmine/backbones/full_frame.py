"""``full:NAME@SIZE``: backbone NAME fed the whole image resized to SIZE pixels (no centre crop),
e.g. ``full:mobilenet_v2@250``.

Why: the standard ImageNet preprocessing (shorter side to 256, centre crop 224) cuts off the border and
resamples the image. For fine texture and small defects both hurt: on the demo's 250 x 250 textile photos a
logistic probe on MobileNetV2 features scores 0.74 with the standard crop, 0.70 with the whole image
shrunk to 224 px, and 0.85 with the whole image at its own 250 px (5-fold CV, see docs/backbones.md). The
variant has its own name and therefore its own feature fingerprint and cache; weights and network are the
base backbone's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..errors import InputError
from .spec import Backbone

PREFIX = "full"
MIN_SIZE, MAX_SIZE = 32, 1024


def full_frame(model: str, *, lookup: Callable[[str], Backbone], root=None) -> Backbone:
    """The Backbone for ``full:<model>`` where model is ``NAME@SIZE``; ``lookup`` resolves NAME."""
    base_name, _, size_text = model.rpartition("@")
    if not base_name or not size_text.isdigit():
        raise InputError(f"the backbone 'full:{model}' must be written full:NAME@SIZE, e.g. full:mobilenet_v2@256 "
                         "(NAME a registered backbone, SIZE the input side in pixels)")
    size = int(size_text)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"the input size {size} of 'full:{model}' must be between {MIN_SIZE} and {MAX_SIZE} pixels")
    base = lookup(base_name)
    return replace(base, name=f"{PREFIX}:{base.name}@{size}",
                   description=f"{base.description}; whole image resized to {size} px, no centre crop",
                   preprocessing=replace(base.preprocessing, input_size=size, resize=size))
