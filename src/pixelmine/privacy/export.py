"""Safe copies of a workspace's images: location, thumbnails (and on request all metadata) removed, faces
painted out, a manifest of what was written. The originals are never touched.

    result = export_data(ws.catalog, ws.root, "share/", labels=["cat"], anonymise_faces="mosaic")
    # share/cat/IMG_0042.jpg ... and share/manifest.csv (id, exported_path, original_path, label, format,
    # bytes, sha256, removed, faces, pixels, note)

Rules:
- **Selection**: every usable image (status ok, not marked ``ignore`` by a correction), or the explicit
  ``ids``, narrowed to the images a finder flagged (``only``: a finding kind) and to ``labels`` (corrections
  applied). Unknown kinds and labels are refused with the ones that exist.
- **Where**: ``output/<label>/<file name>`` (``unlabelled`` without a label; a name two images share gets
  a short id), or ``output/<id16><ext>`` with ``anonymise_paths`` (the manifest then names no original
  path). Refused: an output that is, contains or lies inside a folder holding a selected original or
  the folder it was ingested from (a copy there could overwrite an original, and the next ingest would
  catalogue the copies), or the workspace; a non-empty folder that is not an earlier export.
- **Cleaning**: :func:`.strip.clean_bytes`; with ``anonymise_faces`` ("fill" or "mosaic") faces are found
  on the upright image, and an image with faces is written through :func:`.strip.apply_pixels` with the
  faces painted out (re-encoded); an image without faces keeps the lossless path.
- **Resuming**: the manifest is saved every 20 s and at the end; a second run with the same settings skips
  every image whose file is still there with the hash the manifest recorded. A folder exported with other
  settings is refused (its older copies may hold what the new settings remove).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from ..progress import resolve_progress
from .audit import open_face_detector
from .containers import sniff
from .strip import EXTENSIONS, apply_pixels, clean_bytes

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.csv"
STATE_FILE = "export.json"
FORMAT = "pixelmine-data-export/1"
COLUMNS = ("id", "exported_path", "original_path", "label", "format", "bytes", "sha256", "removed", "faces",
           "pixels", "note")
FACE_METHODS = ("fill", "mosaic")
UNLABELLED = "unlabelled"
SAVE_EVERY_S = 20.0


@dataclass
class ExportRow:
    id: str
    exported_path: str  # relative to the output folder; "" when the image failed
    original_path: str  # the id instead with anonymise_paths
    label: str | None
    format: str | None = None
    bytes: int = 0
    sha256: str = ""
    removed: list[str] = field(default_factory=list)
    faces: int | None = None  # None: not checked
    pixels: str = ""  # identical (compressed pixel data copied byte for byte) or re-encoded
    note: str = ""

    def csv_row(self) -> dict:
        return {**asdict(self), "label": self.label or "", "removed": "; ".join(self.removed),
                "faces": "" if self.faces is None else self.faces}

    @classmethod
    def from_csv(cls, row: dict) -> "ExportRow":
        return cls(id=row["id"], exported_path=row["exported_path"], original_path=row["original_path"],
                   label=row["label"] or None, format=row["format"] or None, bytes=int(row["bytes"] or 0),
                   sha256=row["sha256"], removed=[part for part in row["removed"].split("; ") if part],
                   faces=int(row["faces"]) if row["faces"] else None, pixels=row["pixels"], note=row["note"])


@dataclass
class DataExport:
    output: str
    rows: list[ExportRow]
    settings: dict
    exported: int = 0  # written by this run
    skipped: int = 0  # already there from an earlier run, unchanged
    failed: int = 0
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        written = [r for r in self.rows if r.exported_path]
        return {"images": len(self.rows), "exported": self.exported, "skipped": self.skipped, "failed": self.failed,
                "with_faces": sum(bool(r.faces) for r in written),
                "reencoded": sum(r.pixels == "re-encoded" for r in written),
                "bytes": sum(r.bytes for r in written)}

    def to_dict(self) -> dict:
        return {"output": self.output, "manifest": str(Path(self.output) / MANIFEST_FILE), "settings": self.settings,
                "counts": self.counts, "seconds": round(self.seconds, 3),
                "rows": [asdict(row) for row in self.rows]}

    def format_table(self, *, limit: int = 20) -> str:
        c = self.counts
        lines = ["| images | exported now | already there | failed | faces painted out in | re-encoded | MB |",
                 "|---|---|---|---|---|---|---|",
                 f"| {c['images']} | {c['exported']} | {c['skipped']} | {c['failed']} | {c['with_faces']} "
                 f"| {c['reencoded']} | {c['bytes'] / 1e6:.2f} |"]
        failures = [r for r in self.rows if not r.exported_path]
        if failures:
            lines += ["", "| image | original | problem |", "|---|---|---|"]
            lines += [f"| {r.id[:16]} | {r.original_path} | {r.note} |" for r in failures[:limit]]
            if len(failures) > limit:
                lines.append(f"| ... | {len(failures) - limit} more in the manifest | |")
        return "\n".join(lines)


# -- selection -----------------------------------------------------------------------------------------
def _select(catalog, ids, only: str | None, labels: list[str] | None) -> list[dict]:
    from ..corrections import effective_labels, ignored_ids
    from ..discover.findings import load_findings

    images = catalog.images(status="ok")
    current = effective_labels(catalog, include_ignored=True)
    for image in images:
        image["label"] = current.get(image["id"], image["label"])
    by_id = {image["id"]: image for image in images}
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            raise InputError(f"{len(unknown)} image id(s) are not usable images of this workspace (e.g. "
                             f"{unknown[0]!r}); list them with: pixelmine files --json")
        chosen = [by_id[i] for i in wanted]
    else:
        ignored = ignored_ids(catalog)
        chosen = [image for image in images if image["id"] not in ignored]
    if only is not None:
        kinds = sorted(row[0] for row in catalog.query("SELECT DISTINCT kind FROM findings"))
        if only not in kinds:
            raise InputError(f"no finding of kind {only!r} in this workspace; "
                             + (f"kinds found: {', '.join(kinds)}" if kinds else
                                "there are no findings yet: run pixelmine discover first"))
        flagged = {finding.image_id for finding in load_findings(catalog, kind=only, issues_only=True)}
        chosen = [image for image in chosen if image["id"] in flagged]
    if labels:
        known = sorted({image["label"] for image in images if image["label"] is not None})
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise InputError(f"label {unknown[0]!r} is not a label of this workspace; labels: "
                             + (", ".join(known) if known else "(none: the images are unlabelled)"))
        chosen = [image for image in chosen if image["label"] in set(labels)]
    return sorted(chosen, key=lambda image: image["id"])


# -- where the copies go -------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(output, root, catalog, chosen: list[dict]) -> Path:
    """The resolved output folder; InputError when writing there could overwrite an original, would put
    copies where the next ingest finds them, or is the workspace."""
    out = Path(output).expanduser().resolve()
    workspace = Path(root).expanduser().resolve()
    if _inside(workspace, out):
        raise InputError(f"the export folder {str(output)!r} is (or contains) the workspace {str(workspace)!r}; "
                         "export into a folder of its own, e.g. --output exported/")
    ids = {image["id"] for image in chosen}
    folders: set[Path] = set()
    for row in catalog.query("SELECT path, image_id, source FROM paths WHERE present = 1"):
        if row["image_id"] not in ids:
            continue
        original = Path(row["path"])
        folders.update({original.parent.resolve(), original.resolve().parent})
        source = Path(row["source"])
        if source.is_dir():
            folders.add(source.resolve())
    for folder in sorted(folders):
        if _inside(out, folder) or _inside(folder, out):
            raise InputError(f"the export folder {str(output)!r} overlaps {str(folder)!r}, which holds originals "
                             "being exported (or is the folder they were ingested from): the copies could "
                             "overwrite originals, and the next ingest would catalogue them. Originals are never "
                             "overwritten; choose a folder outside it, e.g. --output ../exported")
    if out.exists() and not out.is_dir():
        raise InputError(f"the export folder {str(output)!r} is a file; give a folder (it is created when missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise InputError(f"the export folder {str(output)!r} is not empty and holds no {MANIFEST_FILE} of an earlier "
                         "export; choose a new or empty folder, so that no file of yours is overwritten")
    return out


_UNSAFE = re.compile(r"[^\w.\- ()+,@=]+")


def _folder_name(label: str | None) -> str:
    name = _UNSAFE.sub("_", label or "").strip(" .")
    return name or UNLABELLED


def _extension(path: str) -> str:
    """The extension the cleaned copy will have, from the file's first bytes: JPEG, PNG and WebP keep
    theirs (painted-out faces too), everything else becomes PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return Path(path).suffix.lower()
    return EXTENSIONS.get(sniff(head) or "", ".png")


def _names(chosen: list[dict], *, anonymise_paths: bool) -> dict[str, str]:
    """image id -> path relative to the output folder; a name two images share gets the id's first 8."""
    wanted: dict[str, str] = {}
    for image in chosen:
        extension = _extension(image["path"])
        if anonymise_paths:
            wanted[image["id"]] = image["id"][:16] + extension
        else:
            stem = _UNSAFE.sub("_", Path(image["path"]).stem).strip(" .") or image["id"][:16]
            wanted[image["id"]] = f"{_folder_name(image['label'])}/{stem}{extension}"
    taken: dict[str, str] = {}
    names = {}
    for image in chosen:  # sorted by id: the same names on every run
        name = wanted[image["id"]]
        if name.lower() in taken:
            path = Path(name)
            name = str(path.with_name(f"{path.stem}-{image['id'][:8]}{path.suffix}"))
        taken[name.lower()] = image["id"]
        names[image["id"]] = name
    return names


# -- manifest and state --------------------------------------------------------------------------------
def _read_manifest(out: Path) -> dict[str, ExportRow]:
    path = out / MANIFEST_FILE
    if not path.exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["id"]: ExportRow.from_csv(row) for row in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"the manifest {str(path)!r} of the earlier export cannot be read ({exc}); move the folder "
                         "away or export into a new one") from exc


def _write_manifest(out: Path, rows: list[ExportRow], settings: dict, counts: dict | None = None) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.csv_row() for row in sorted(rows, key=lambda r: (r.exported_path or "~", r.id)))
    atomic_write_text(out / MANIFEST_FILE, buffer.getvalue())
    atomic_write_json(out / STATE_FILE, {"format": FORMAT, "settings": settings, "counts": counts or {}})


def _previous_settings(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError):
        return None


def _unchanged(out: Path, row: ExportRow | None, name: str) -> bool:
    if row is None or row.exported_path != name or not row.sha256:
        return False
    target = out / name
    return target.is_file() and sha256_file(target) == row.sha256


# -- the export ----------------------------------------------------------------------------------------
def _clean_one(image: dict, *, detector, anonymise, method, strip_location: bool, strip_metadata: bool):
    """(CleanResult, faces found or None)."""
    with open(image["path"], "rb") as handle:
        data = handle.read()
    if detector is None:
        return clean_bytes(data, strip_location=strip_location, strip_metadata=strip_metadata), None
    import numpy as np

    from ..imaging.decode import open_rgb

    try:
        rgb = np.asarray(open_rgb(data))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot decode the image to look for faces ({type(exc).__name__}: {exc})") from exc
    faces = detector.detect(rgb)
    if not faces:
        return clean_bytes(data, strip_location=strip_location, strip_metadata=strip_metadata), 0
    painted = anonymise(rgb, faces, method)
    result = apply_pixels(data, painted, strip_location=strip_location, strip_metadata=strip_metadata)
    result.removed.append(f"{len(faces)} face(s) painted out ({method})")
    return result, len(faces)


def export_data(catalog, root, output, *, ids=None, only: str | None = None, labels: list[str] | None = None,
                strip_location: bool = True, strip_metadata: bool = False, anonymise_faces: str | None = "fill",
                anonymise_paths: bool = False, progress=None) -> DataExport:
    """Write cleaned copies of the selected images to ``output`` with a manifest (see the module docstring)."""
    started = time.perf_counter()
    if isinstance(anonymise_faces, str) and anonymise_faces.lower() == "none":
        anonymise_faces = None
    if anonymise_faces is not None and anonymise_faces not in FACE_METHODS:
        raise InputError(f"The 'anonymise_faces' of export_data must be one of: {', '.join(FACE_METHODS)}, or None "
                         f"to leave faces as they are. Got {anonymise_faces!r} instead.")
    if isinstance(labels, str):
        labels = [labels]
    chosen = _select(catalog, ids, only, labels)
    out = check_output(output, root, catalog, chosen)
    settings = {"strip_location": bool(strip_location or strip_metadata), "strip_metadata": bool(strip_metadata),
                "anonymise_faces": anonymise_faces, "anonymise_paths": bool(anonymise_paths)}
    previous = _read_manifest(out)
    earlier = _previous_settings(out)
    if previous and earlier is not None and earlier != settings:
        raise InputError(f"the folder {str(output)!r} holds an export made with other settings ({earlier}); its "
                         "copies may keep what these settings remove. Export into a new folder, or delete this one "
                         "first")
    names = _names(chosen, anonymise_paths=anonymise_paths)
    todo = [image for image in chosen if not _unchanged(out, previous.get(image["id"]), names[image["id"]])]
    rows: dict[str, ExportRow] = {image_id: row for image_id, row in previous.items()
                                  if row.exported_path and (out / row.exported_path).is_file()}
    skipped = len(chosen) - len(todo)
    detector = anonymise = None
    if anonymise_faces and todo:
        detector = open_face_detector("export without looking for faces: --anonymise-faces none "
                                      "(anonymise_faces=None)")
        from .faces import anonymise
    out.mkdir(parents=True, exist_ok=True)
    update, close = resolve_progress(progress, "export", unit="image")
    exported = failed = 0
    last_save = time.monotonic()
    try:
        for done, image in enumerate(todo, 1):
            name = names[image["id"]]
            row = ExportRow(image["id"], "", image["id"] if anonymise_paths else image["path"], image["label"])
            try:
                result, faces = _clean_one(image, detector=detector, anonymise=anonymise, method=anonymise_faces,
                                           strip_location=strip_location, strip_metadata=strip_metadata)
                if Path(name).suffix != result.extension:  # the format decided otherwise: follow it
                    name = str(Path(name).with_suffix(result.extension))
                target = out / name
                atomic_write_bytes(target, result.data)
                row.exported_path, row.format, row.bytes = name, result.format, len(result.data)
                row.sha256 = sha256_file(target)
                row.removed, row.faces = list(result.removed), faces
                row.pixels = "identical" if result.pixels_identical else "re-encoded"
                row.note = result.note or ""
                exported += 1
            except (InputError, OSError, ValueError) as exc:  # this file; a full disk raises StorageError
                row.note = f"not exported: {exc}"
                failed += 1
                log.warning("not exported: %s (%s)", image["path"], exc)
            rows[image["id"]] = row
            update(done, len(todo))
            if time.monotonic() - last_save > SAVE_EVERY_S:
                _write_manifest(out, list(rows.values()), settings)
                last_save = time.monotonic()
    finally:
        if detector is not None:
            detector.close()
        close()
        _write_manifest(out, list(rows.values()), settings)  # what is done stays done, even when interrupted
    selected_rows = [rows[image["id"]] for image in chosen if image["id"] in rows]
    others = [row for image_id, row in rows.items() if image_id not in {image["id"] for image in chosen}]
    result = DataExport(str(out), selected_rows, settings, exported=exported, skipped=skipped, failed=failed,
                        seconds=time.perf_counter() - started)
    _write_manifest(out, selected_rows + others, settings, result.counts)
    return result
