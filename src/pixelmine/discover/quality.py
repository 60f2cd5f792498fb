"""Image quality: blurry, too dark, too bright, low information, odd size, odd aspect ratio, greyscale in a
colour set — each judged against the collection itself, not against fixed numbers.

For each statistic (see :mod:`.pixel_stats`; size and aspect ratio come from the catalog) the finder computes
a robust z-score, ``z = (value - median) / max(1.4826 * MAD, floor)``. The floor keeps a collection of
identical-looking images (MAD = 0) from flagging tiny differences; it is in the statistic's own units and
listed in :data:`CHECKS`. An image is flagged when ``z`` passes ``z_threshold`` on the check's side, and for
dark/bright also an absolute sanity bound (a collection of night shots is not "too dark" as a whole — only
its outliers are — but a mid-grey image is never "too dark"). The score halves every ``z_threshold`` robust
standard deviations past the median: ``score = 2 ** (-max(±z, 0) / z_threshold)``, so issues score < 0.5.
Greyscale is flagged only when most of the collection is colour; its score is colourfulness / (2 * limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .findings import Finding
from .outliers import robust_z

Z_THRESHOLD = 3.5
GREY_COLOURFULNESS = 0.02  # mean (max - min) of R, G, B below this: a greyscale picture
GREY_MAJORITY = 0.5  # greyscale is an issue only when less than this share of the collection is grey


@dataclass(frozen=True)
class Check:
    kind: str
    statistic: str  # a column of pixel_stats.STATS, or "log_area" / "log_aspect"
    side: str  # "low", "high" or "both": which tail is the problem
    floor: float  # minimum robust scale, in the statistic's units
    bound: float | None  # absolute sanity bound the value must also pass (None: none)
    meaning: str
    action: str


CHECKS = (
    Check("blurry", "sharpness", "low", 0.05, None, "much less fine detail than the rest of the collection "
          "(variance of the Laplacian)", "retake or drop it; check the focus of the camera that took it"),
    Check("dark", "brightness", "low", 0.02, 0.35, "much darker than the rest of the collection",
          "check exposure; drop it if nothing can be seen"),
    Check("bright", "brightness", "high", 0.02, 0.65, "much brighter than the rest of the collection "
          "(overexposed or washed out)", "check exposure; drop it if nothing can be seen"),
    Check("low_information", "entropy", "low", 0.05, None, "far fewer distinct grey levels than the rest "
          "(blank, flat or nearly uniform)", "drop it unless blank images are a real class"),
    Check("odd_size", "log_area", "both", 0.25, None, "a resolution far from the collection's usual one",
          "check where it came from; resize or drop it"),
    Check("odd_aspect_ratio", "log_aspect", "both", 0.1, None, "an aspect ratio far from the collection's usual "
          "one (a panorama, a strip, a rotated scan)", "check it is not a screenshot, a collage or a wrong crop"),
)

KINDS = {  # kind -> (what it means, what to do)
    **{check.kind: (check.meaning, check.action) for check in CHECKS},
    "greyscale": ("a greyscale image in a collection of colour images",
                  "check it is a real sample; colour features may treat it differently"),
}


def _describe(check: Check, median: float, scale: float, z_threshold: float, limit_low: float, limit_high: float) -> str:
    units = {"sharpness": "log10 Laplacian variance", "brightness": "mean luma 0..1", "entropy": "bits",
             "log_area": "ln(width x height)", "log_aspect": "ln(width / height)"}[check.statistic]
    parts = []
    if check.side in ("low", "both"):
        parts.append(f"below {limit_low:.3f}")
    if check.side in ("high", "both"):
        parts.append(f"above {limit_high:.3f}")
    text = (f"{check.statistic} ({units}) {' or '.join(parts)} = median {median:.3f} "
            f"{'±' if check.side == 'both' else ('-' if check.side == 'low' else '+')} {z_threshold:g} x robust s.d. "
            f"{scale:.3f}")
    if check.bound is not None:
        text += f", and {'<' if check.side == 'low' else '>'} {check.bound:g} in absolute terms"
    return text


def find_quality_issues(ids: Sequence[str], stats: np.ndarray, widths: Sequence[int | None],
                        heights: Sequence[int | None], *, z_threshold: float = Z_THRESHOLD,
                        only: set[str] | None = None) -> list[Finding]:
    """Quality findings for every image with the needed numbers (NaN stats / missing sizes are skipped).

    ``stats``: (N, 4) in :data:`pixelmine.discover.pixel_stats.STATS` column order.
    """
    from .pixel_stats import STATS

    stats = np.asarray(stats, dtype=np.float64)
    n = len(ids)
    if stats.shape != (n, len(STATS)):
        raise InputError(f"stats must have shape ({n}, {len(STATS)}) (images x {', '.join(STATS)}); got {stats.shape}")
    if len(widths) != n or len(heights) != n:
        raise InputError(f"widths ({len(widths)}) and heights ({len(heights)}) must have one entry per image ({n})")
    if z_threshold <= 0:
        raise InputError(f"z_threshold must be > 0 (robust standard deviations); got {z_threshold!r}")
    w = np.array([np.nan if v is None or v <= 0 else v for v in widths], dtype=np.float64)
    h = np.array([np.nan if v is None or v <= 0 else v for v in heights], dtype=np.float64)
    columns = {name: stats[:, k] for k, name in enumerate(STATS)}
    columns["log_area"] = np.log(w * h)
    columns["log_aspect"] = np.log(w / h)
    findings: list[Finding] = []
    for check in CHECKS:
        if only is not None and check.kind not in only:
            continue
        values = columns[check.statistic]
        known = np.flatnonzero(np.isfinite(values))
        if len(known) < 3:
            continue
        z_known, median, scale = robust_z(values[known], min_scale=check.floor)
        limit_low, limit_high = median - z_threshold * scale, median + z_threshold * scale
        threshold = _describe(check, median, scale, z_threshold, limit_low, limit_high)
        for row, z in zip(known.tolist(), z_known.tolist()):
            excess = -z if check.side == "low" else (z if check.side == "high" else abs(z))
            issue = excess > z_threshold
            if check.bound is not None:
                issue = issue and (values[row] < check.bound if check.side == "low" else values[row] > check.bound)
            score = float(2.0 ** (-max(excess, 0.0) / z_threshold))
            if not issue:
                score = max(score, 0.5)  # an image held back by the absolute bound is not scored as an issue
            findings.append(Finding(ids[row], check.kind, score, bool(issue), {
                check.statistic: round(float(values[row]), 4), "robust_z": round(float(z), 3),
                "median": round(median, 4), "threshold": threshold}))
    if only is None or "greyscale" in only:
        findings.extend(_greyscale(ids, columns["colourfulness"]))
    return findings


def _greyscale(ids: Sequence[str], colourfulness: np.ndarray) -> list[Finding]:
    known = np.flatnonzero(np.isfinite(colourfulness))
    if len(known) < 3:
        return []
    grey_share = float((colourfulness[known] < GREY_COLOURFULNESS).mean())
    colour_set = grey_share < GREY_MAJORITY
    threshold = (f"colourfulness (mean max-min of R, G, B, 0..1) below {GREY_COLOURFULNESS:g}, in a collection "
                 f"where less than {GREY_MAJORITY:.0%} of images are grey (here {grey_share:.1%})")
    findings = []
    for row in known.tolist():
        value = float(colourfulness[row])
        grey = value < GREY_COLOURFULNESS
        score = min(1.0, value / (2 * GREY_COLOURFULNESS))
        if not colour_set:
            score = max(score, 0.5)
        findings.append(Finding(ids[row], "greyscale", float(score), bool(grey and colour_set), {
            "colourfulness": round(value, 4), "grey_share": round(grey_share, 4), "threshold": threshold}))
    return findings
