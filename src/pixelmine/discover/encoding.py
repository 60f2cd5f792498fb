"""How well a file is encoded, as one number: the JPEG quality its quantisation tables were made for, or
:data:`LOSSLESS` for a lossless file. The near-duplicate finder keeps the best-encoded copy of a group.

The estimate inverts the scaling of the standard luminance table (ITU-T T.81 Annex K) that libjpeg, Pillow,
OpenCV and most cameras apply for quality q: scale = 5000 / q below 50, 200 - 2 q above. A table that was not
made that way still gets a number that orders coarser quantisation below finer.
"""

from __future__ import annotations

import numpy as np

LOSSLESS = 101.0  # above any JPEG quality: a lossless file loses nothing, not even at JPEG quality 100
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "PPM", "QOI", "TGA"})
_ANNEX_K_LUMINANCE_SUM = 3_688  # the sum of the 64 entries of the standard luminance table


def jpeg_quality(luminance_table) -> float:
    """Estimated libjpeg quality (1..100) of a 64-entry luminance quantisation table (any order)."""
    values = np.asarray(list(luminance_table), dtype=np.float64)
    if values.size != 64 or values.min() < 1:
        return float("nan")
    scale = 100.0 * values.sum() / _ANNEX_K_LUMINANCE_SUM  # percent of the standard table
    if scale <= 1.0:
        return 100.0
    quality = 5000.0 / scale if scale > 100.0 else (200.0 - scale) / 2.0
    return float(np.clip(round(quality), 1.0, 100.0))


def encoding_quality(image) -> float:
    """:func:`jpeg_quality` of an opened Pillow JPEG, :data:`LOSSLESS` for a lossless format in a mode it stores
    exactly (a palette image lost colours when it was made, so it is not), NaN when unknown (WebP, GIF, ...)."""
    fmt = (image.format or "").upper()
    if fmt in ("JPEG", "MPO"):
        tables = getattr(image, "quantization", None) or {}
        return jpeg_quality(tables[0]) if 0 in tables else float("nan")
    if fmt in LOSSLESS_FORMATS and image.mode != "P":
        return LOSSLESS
    return float("nan")
