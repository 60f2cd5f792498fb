"""The feature sets automatic model selection considers: each backbone that can run here, with the standard
crop and with the whole frame at the images' own size.

Why both framings: the standard ImageNet preprocessing (shorter side to 256, centre crop 224) cuts off the
border and resamples the image; for fine texture and small defects that costs a lot (the demo's textile
photos: 0.757 test accuracy on the crop, 0.847 on the whole 250 px frame), for object photos the crop is
often as good or better. Nobody knows in advance which holds for a new collection, so both are measured.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import PixelmineError

log = logging.getLogger(__name__)

DEFAULT_CANDIDATE_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
MIN_SIDE = 224  # smaller images are enlarged to the networks' own input size, not fed at 28 px


def full_frame_size(catalog, *, max_side: int = 320) -> int:
    """The side of the whole-frame input: the median geometric mean side (sqrt(width x height)) of the ok
    images, within [224, ``max_side``]. The cap bounds the cost (it grows with the square of the side:
    320 px is 2x the compute of 224 px); the floor keeps thumbnails at the size the networks were trained at.
    """
    rows = catalog.query("SELECT width, height FROM images WHERE status = 'ok' AND width > 0 AND height > 0")
    if not rows:
        return MIN_SIDE
    sides = np.sqrt(np.asarray([r["width"] for r in rows], dtype=np.float64) *
                    np.asarray([r["height"] for r in rows], dtype=np.float64))
    return int(np.clip(round(float(np.median(sides))), MIN_SIDE, max(MIN_SIDE, max_side)))


def candidate_feature_sets(catalog, root, reference: str, backbones=DEFAULT_CANDIDATE_BACKBONES, *,
                           user_named=(), full_frame: bool = True, max_side: int = 320) -> tuple[list[str], list[str]]:
    """(feature set names, reference first; notes on what was left out and why).

    ``backbones`` are used only when their weights are here (no download is started for a default
    candidate); ``user_named`` ones may download like any explicit ``--backbone``.
    """
    from .. import backbones as registry

    notes: list[str] = []
    names: list[str] = []
    size = full_frame_size(catalog, max_side=max_side) if full_frame else None
    ordered = [(reference, True)] + [(b, False) for b in backbones] + [(b, True) for b in user_named]
    for name, explicit in ordered:
        try:
            spec = registry.get(name, root=root)
            spec.locate_weights(allow_download=None if explicit else False)
        except PixelmineError as exc:
            if name == reference and name not in names:
                # features written into the workspace by other means (no registered network): used as they are
                names.append(name)
                continue
            if explicit:
                raise
            notes.append(f"backbone {name} left out: its weights are not on this machine ({exc})")
            continue
        variants = [spec.name]
        if size is not None and not spec.name.startswith(("full:", "model:")):
            variants.append(f"full:{spec.name}@{size}")
        for variant in variants:
            if variant not in names:
                names.append(variant)
    return names, notes

