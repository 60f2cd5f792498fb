"""Which group each image belongs to, for a metadata column: the columns fairness and group balancing read.

A column is either one of the manifest's own columns (``images.metadata``) or one pixelmine derives:

    camera_make, camera_model   EXIF Make / Model of the file
    capture_hour                part of the day the photo was taken (EXIF DateTimeOriginal): 00-05, 06-11, ...
    orientation                 landscape / portrait / square, after EXIF orientation
    resolution                  shorter side of the upright image: <256 px, 256-511 px, ...
    brightness                  tertile of mean luma (dark / middle / bright third, thresholds in the name)
    folder                      the file's folder relative to the folder it was ingested from
    source                      the folder, manifest or path list it was ingested from

Values are strings; an image without a value is in the group :data:`MISSING`. A numeric manifest column with
more than :data:`MAX_PLAIN_GROUPS` distinct values is cut into quartiles (a measurement is no group, a range
of it is).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

MISSING = "(no value)"
MAX_PLAIN_GROUPS = 12

DERIVED_COLUMNS: dict[str, str] = {
    "camera_make": "EXIF camera make",
    "camera_model": "EXIF camera model",
    "capture_hour": "part of the day the photo was taken (EXIF DateTimeOriginal)",
    "orientation": "landscape / portrait / square, after EXIF orientation",
    "resolution": "shorter side of the upright image, in bands",
    "brightness": "mean brightness, in thirds of the collection",
    "folder": "folder of the file relative to the ingested folder",
    "source": "the folder, manifest or path list the file was ingested from",
}
_RESOLUTION_BANDS = (256, 512, 1024, 2048)


def manifest_columns(rows: Sequence[dict]) -> list[str]:
    """The manifest columns any of ``rows`` (catalog image rows) has, sorted."""
    return sorted({key for row in rows for key in (row.get("metadata") or {})})


def group_columns(rows: Sequence[dict]) -> dict[str, str]:
    """Every column ``rows`` can be grouped by: name -> what it is (manifest columns first)."""
    return {**{name: "manifest column" for name in manifest_columns(rows)}, **DERIVED_COLUMNS}


def check_column(rows: Sequence[dict], column: str) -> None:
    columns = group_columns(rows)
    if column not in columns:
        manifest = manifest_columns(rows)
        raise InputError(f"there is no metadata column {column!r}; the images have "
                         + (f"the manifest columns {', '.join(map(repr, manifest))} and " if manifest else
                            "no manifest columns (add them with pixelmine ingest --manifest FILE.csv) and ")
                         + f"the derived columns {', '.join(DERIVED_COLUMNS)}")


def group_values(catalog, root, rows: Sequence[dict], column: str, *, progress=None) -> list[str]:
    """The group of each of ``rows`` (catalog image rows with ``id``, ``path``, ``width``, ``height``,
    ``orientation``, ``metadata``) for ``column``; InputError listing the columns when it does not exist.
    ``progress``: a ``(done, total)`` callable or None (reading EXIF headers, measuring brightness)."""
    check_column(rows, column)
    if column in ("camera_make", "camera_model", "capture_hour"):
        return _exif_values(rows, column, progress)
    if column == "orientation":
        return [_orientation(row) for row in rows]
    if column == "resolution":
        return [_resolution(row) for row in rows]
    collection = catalog.images(status="ok")  # bands are cut on the whole collection, so names stay the same
    if column == "brightness":
        return _brightness(root, rows, collection, progress)
    if column in ("folder", "source"):
        return _sources(catalog, rows, column)
    return _manifest_values([(row.get("metadata") or {}).get(column) for row in rows],
                            [(row.get("metadata") or {}).get(column) for row in collection])


def _manifest_values(values: list, reference: list) -> list[str]:
    present = [v for v in reference if not _missing(v)]
    numeric = [float(v) for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numeric and len(numeric) == len(present) and len(set(numeric)) > MAX_PLAIN_GROUPS:
        edges = np.unique(np.quantile(numeric, [0.25, 0.5, 0.75]))
        names = [_band_name(low, high) for low, high in zip([-math.inf, *edges], [*edges, math.inf])]
        return [MISSING if _missing(v) else names[int(np.searchsorted(edges, float(v), side="right"))]
                for v in values]
    return [MISSING if _missing(v) else _text(v) for v in values]


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, float) and math.isnan(value))


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _band_name(low: float, high: float) -> str:
    if low == -math.inf:
        return f"< {high:g}"
    if high == math.inf:
        return f">= {low:g}"
    return f"{low:g} to < {high:g}"


def _upright_size(row: dict) -> tuple[int, int] | None:
    width, height = row.get("width"), row.get("height")
    if not width or not height:
        return None
    if (row.get("orientation") or 1) in (5, 6, 7, 8):  # a quarter turn swaps the sides
        width, height = height, width
    return int(width), int(height)


def _orientation(row: dict) -> str:
    size = _upright_size(row)
    if size is None:
        return MISSING
    width, height = size
    if abs(width - height) <= 0.05 * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


def _resolution(row: dict) -> str:
    size = _upright_size(row)
    if size is None:
        return MISSING
    side = min(size)
    if side < _RESOLUTION_BANDS[0]:
        return f"< {_RESOLUTION_BANDS[0]} px"
    for low, high in zip(_RESOLUTION_BANDS, _RESOLUTION_BANDS[1:]):
        if side < high:
            return f"{low}-{high - 1} px"
    return f">= {_RESOLUTION_BANDS[-1]} px"


def _exif_values(rows: Sequence[dict], column: str, progress) -> list[str]:
    from ..privacy.metadata import read_metadata

    values = []
    for done, row in enumerate(rows, start=1):
        meta = read_metadata(row["path"])
        if column == "capture_hour":
            values.append(_part_of_day(meta.captured_at))
        else:
            value = getattr(meta, column)
            values.append(value.strip() if isinstance(value, str) and value.strip() else MISSING)
        if progress is not None:
            progress(done, len(rows))
    return values


def _part_of_day(captured_at: str | None) -> str:
    if not captured_at or len(captured_at) < 13 or not captured_at[11:13].isdigit():
        return MISSING
    hour = int(captured_at[11:13])
    start = hour // 6 * 6
    return f"{start:02d}-{start + 5:02d} h"


def _brightness(root, rows: Sequence[dict], collection: Sequence[dict], progress) -> list[str]:
    from .pixel_stats import CACHE_NAME, STATS, pixel_stats

    data = pixel_stats(os.path.join(root, "discover", CACHE_NAME), [r["id"] for r in collection],
                       [r["path"] for r in collection], progress=progress)
    position = {r["id"]: k for k, r in enumerate(collection)}
    everything = data.stats[:, STATS.index("brightness")]
    luma = np.asarray([everything[position[r["id"]]] if r["id"] in position else np.nan for r in rows])
    known = everything[np.isfinite(everything)]
    if not len(known):
        return [MISSING] * len(rows)
    low, high = np.quantile(known, [1 / 3, 2 / 3])
    names = (f"dark third (< {low:.2f})", f"middle third ({low:.2f}-{high:.2f})", f"bright third (> {high:.2f})")
    return [MISSING if not np.isfinite(v) else names[0 if v < low else (2 if v > high else 1)] for v in luma]


def _sources(catalog, rows: Sequence[dict], column: str) -> list[str]:
    source_of = {r["path"]: r["source"] for r in catalog.query("SELECT path, source FROM paths WHERE present = 1")}
    values = []
    for row in rows:
        source = source_of.get(row["path"])
        if source is None:
            values.append(MISSING)
        elif column == "source":
            values.append(os.path.basename(source.rstrip(os.sep)) or source)
        else:
            base = source if os.path.isdir(source) else os.path.dirname(source)
            folder = os.path.relpath(os.path.dirname(row["path"]), base) if base else os.path.dirname(row["path"])
            values.append(folder if not folder.startswith("..") else os.path.dirname(row["path"]))
    return values


# -- a model's groups: the table per column, and the images of the groups it fails ------------------------
GAP_KIND = "group_gap"
KINDS = {GAP_KIND: (
    "the image is in a group (a value of a metadata column) on which the model does significantly worse than on "
    "the other images: lower accuracy or recall, or more false alarms, with a simultaneous interval that excludes "
    "zero (measured on the model's test split); the score is that group's accuracy",
    "look at the group's images and its column: collect or label more of them, or retrain with "
    "pixelmine train --balance-groups COLUMN; a column that should not matter (a camera, a tint) is a shortcut "
    "the model learned")}


def model_group_reports(catalog, root, model, columns: Sequence[str] | None = None, *, min_group: int = 20,
                        n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0, progress=None):
    """(reports, skipped {column: why}, test rows, {column: groups of the rows}) for ``model`` on its test
    split. ``columns`` None: every column whose values split the test images into two or more groups."""
    from ..trust.group_metrics import group_report, simultaneous

    rows, probs = model.test_probabilities(progress=False)
    labels = [r["label"] for r in rows]
    asked = list(columns) if columns else list(group_columns(rows))
    for column in asked:
        check_column(rows, column)
    reports, skipped, values = [], {}, {}
    for column in asked:
        groups = group_values(catalog, root, rows, column, progress=progress)
        distinct = set(groups)
        if len(distinct) < 2:
            if columns:
                (value,) = distinct
                raise InputError(f"the column {column!r} has one value ({value!r}) across model {model.name!r}'s "
                                 f"{len(rows)} test images: there are no groups to compare; choose a column whose "
                                 "values differ between images")
            skipped[column] = "one value for every test image" if MISSING not in distinct else "no value"
            continue
        follows_label = all(len({y for y, g in zip(labels, groups) if g == value}) == 1 for value in distinct)
        if follows_label and not columns:
            skipped[column] = "each group holds one class: the column follows the label (per-class recall is in " \
                              "the model card)"
            continue
        report = group_report(column, labels, probs, model.classes, groups, min_group=min_group,
                              n_bootstrap=n_bootstrap, alpha=alpha, seed=seed)
        if follows_label:
            report.notes.append("each group holds one class, so the column follows the label: its gaps are the "
                                "classes' own (see the model card's per-class recall) and are not findings")
            report.label_column = True
        if not columns and not any(g.ranked for g in report.groups):
            skipped[column] = f"no group has {min_group} test images ({len(distinct)} groups)"
            continue
        reports.append(report)
        values[column] = groups
    simultaneous(reports, alpha=alpha)
    return reports, skipped, rows, values


def group_gap_findings(reports, rows: Sequence[dict], values: dict, model_name: str) -> list:
    """One ``group_gap`` finding per measured image: flagged when one of its groups is failed (a harmful
    significant gap); the score is the lowest accuracy of its ranked groups."""
    from .findings import Finding

    found = []
    by_column = {r.column: r for r in reports}
    for k, row in enumerate(rows):
        score, failed = 1.0, []
        for column, report in by_column.items():
            stats = report.group(values[column][k])
            if not stats.ranked:
                continue
            score = min(score, stats.accuracy)
            harmful = [g for g in report.harmful_gaps() if g.group == stats.group]
            if harmful:
                failed.append({"column": column, "group": stats.group, "accuracy": stats.accuracy,
                               "gaps": [g.text() for g in harmful]})
        level = reports[0].level if reports else 0.95
        found.append(Finding(row["id"], GAP_KIND, float(min(max(score, 0.0), 1.0)), bool(failed),
                             {"model": model_name, "groups": failed,
                              **({"column": failed[0]["column"], "group": failed[0]["group"]} if failed else {}),
                              "threshold": f"a group's gap to the other images has a simultaneous {level:.1%} "
                                           "interval that excludes zero (accuracy, recall lower; false-positive "
                                           "rate higher)"}))
    return found
