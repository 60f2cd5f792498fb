"""The privacy audit of a workspace: which images carry location, serial numbers, owner names, embedded
thumbnails or faces.

    audit = audit_privacy(ws.catalog, ws.root)          # faces too (needs the CenterFace model)
    audit.counts    # {'images': 1200, 'with_location': 310, 'with_serial': 45, ..., 'with_faces': 88}
    print(audit.format_table())

Each image is read once: its row is kept in ``WORKSPACE/privacy/audit.json`` by image id (the id is the
hash of the file's bytes, so a row never goes stale), saved every 20 s and at the end, so an interrupted
audit resumes where it stopped and a second audit only reads new images. A file that cannot be read is a
row with its error, never a failed audit. Faces are counted on the upright image (EXIF orientation applied)
with :class:`.faces.FaceDetector`; an audit without faces leaves ``faces`` None, and a later audit with faces
fills in only that.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_json
from ..progress import resolve_progress
from .metadata import read_metadata

log = logging.getLogger(__name__)

AUDIT_FILE = Path("privacy") / "audit.json"
FORMAT = "pixelmine-privacy-audit/1"
READER_VERSION = 1  # bump when read_metadata finds more: cached rows of an older reader are read again
SAVE_EVERY_S = 20.0


@dataclass
class AuditRow:
    id: str
    path: str
    format: str | None = None
    location: list[str] = field(default_factory=list)
    serial_numbers: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    thumbnails: list[str] = field(default_factory=list)
    faces: int | None = None  # None: not checked
    error: str | None = None

    @property
    def has_thumbnail(self) -> bool:
        return bool(self.thumbnails)

    @property
    def carries_anything(self) -> bool:
        return bool(self.location or self.serial_numbers or self.owners or self.thumbnails or self.faces)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PrivacyAudit:
    rows: list[AuditRow]
    faces_checked: bool  # every row has a face count
    reused: int = 0  # rows taken from an earlier audit
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int | None]:
        rows = self.rows
        return {
            "images": len(rows),
            "with_location": sum(bool(r.location) for r in rows),
            "with_serial": sum(bool(r.serial_numbers) for r in rows),
            "with_owner": sum(bool(r.owners) for r in rows),
            "with_thumbnail": sum(r.has_thumbnail for r in rows),
            "with_faces": sum(bool(r.faces) for r in rows) if self.faces_checked else None,
            "errors": sum(r.error is not None for r in rows),
        }

    def to_dict(self) -> dict:
        return {"counts": self.counts, "faces_checked": self.faces_checked, "reused": self.reused,
                "seconds": round(self.seconds, 3), "rows": [row.to_dict() for row in self.rows]}

    def table_rows(self, *, all_images: bool = False) -> list[tuple]:
        """(file, location, serial numbers, owners, thumbnails, faces, error) per image carrying anything
        (every image with ``all_images``)."""
        def names(items: list[str]) -> str:
            return "; ".join(items) if items else "-"

        return [(Path(r.path).name, _short_location(r.location), names(r.serial_numbers), names(r.owners),
                 names(r.thumbnails), "-" if r.faces is None else r.faces, r.error or "")
                for r in self.rows if all_images or r.carries_anything or r.error]

    def format_table(self, *, all_images: bool = False) -> str:
        counts = self.counts
        faces = "not checked" if counts["with_faces"] is None else counts["with_faces"]
        lines = ["| images | with location | with serial numbers | with owner names | with thumbnails | with faces "
                 "| unreadable |", "|---|---|---|---|---|---|---|",
                 f"| {counts['images']} | {counts['with_location']} | {counts['with_serial']} | {counts['with_owner']} "
                 f"| {counts['with_thumbnail']} | {faces} | {counts['errors']} |"]
        rows = self.table_rows(all_images=all_images)
        if rows:
            lines += ["", "| file | location | serial numbers | owners | thumbnails | faces | error |",
                      "|---|---|---|---|---|---|---|"]
            lines += ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]
        return "\n".join(lines)


def _short_location(fields: list[str]) -> str:
    """"EXIF GPS (7), XMP (3), IPTC (2)": where the location is, not every field name."""
    if not fields:
        return "-"
    groups: dict[str, int] = {}
    for name in fields:
        group = name.split(":", 1)[0].replace(" IFD", "")
        groups[group] = groups.get(group, 0) + 1
    return ", ".join(f"{group} ({count})" for group, count in groups.items())


def _audit_path(root) -> Path:
    return Path(root) / AUDIT_FILE


def _load_cache(root) -> dict[str, dict]:
    path = _audit_path(root)
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable privacy audit %s (%s); the images are read again", path, exc)
        return {}
    if payload.get("format") != FORMAT or payload.get("reader_version") != READER_VERSION:
        return {}
    return payload.get("rows", {})


def _save(root, rows: dict[str, AuditRow]) -> None:
    atomic_write_json(_audit_path(root), {"format": FORMAT, "reader_version": READER_VERSION,
                                          "rows": {image_id: row.to_dict() for image_id, row in rows.items()}})


def _row_from_dict(data: dict) -> AuditRow:
    known = {name: data[name] for name in AuditRow.__dataclass_fields__ if name in data}
    return AuditRow(**known)


def load_audit(root) -> PrivacyAudit | None:
    """The last saved audit of the workspace at ``root``; None when there is none."""
    rows = _load_cache(root)
    if not rows:
        return None
    audit_rows = sorted((_row_from_dict(row) for row in rows.values()), key=lambda r: r.path)
    return PrivacyAudit(audit_rows, faces_checked=all(r.faces is not None or r.error for r in audit_rows),
                        reused=len(audit_rows))


def open_face_detector(hint: str):
    """A FaceDetector, or an InputError naming the install command and ``hint`` (how to do without)."""
    try:
        from .faces import FaceDetector

        return FaceDetector()
    except ImportError as exc:
        raise InputError(f"counting faces needs pixelmine's face detector, which cannot be imported here ({exc}); "
                         f"{hint}") from exc
    except InputError as exc:
        raise InputError(f"{exc} Or {hint}.") from exc


def _metadata_row(image_id: str, path: str) -> AuditRow:
    meta = read_metadata(path)
    return AuditRow(image_id, path, meta.format, list(meta.location), list(meta.serial_numbers), list(meta.owners),
                    list(meta.thumbnails), None, meta.error)


def audit_privacy(catalog, root, *, faces: bool = True, progress=None) -> PrivacyAudit:
    """Read every catalogued image (status ok) and count what it carries (see the module docstring)."""
    started = time.perf_counter()
    images = catalog.images(status="ok")
    cached = _load_cache(root)
    rows: dict[str, AuditRow] = {}
    todo = []
    for image in images:
        row = cached.get(image["id"])
        if row is not None:
            row = _row_from_dict(row)
            row.path = image["path"]
            rows[image["id"]] = row
            if faces and row.faces is None and row.error is None:
                todo.append(image)
        else:
            todo.append(image)
    reused = len(images) - len(todo)
    detector = open_face_detector("audit without faces: pixelmine privacy --no-faces (faces=False)") \
        if faces and todo else None
    update, close = resolve_progress(progress, "privacy audit", unit="image")
    last_save = time.monotonic()
    try:
        for done, image in enumerate(todo, 1):
            image_id, path = image["id"], image["path"]
            row = rows.get(image_id) or _metadata_row(image_id, path)
            if detector is not None and row.faces is None and row.error is None:
                try:
                    row.faces = len(detector.detect_file(path))
                except (InputError, OSError, ValueError) as exc:
                    row.error = f"faces not counted: {exc}"
            rows[image_id] = row
            update(done, len(todo))
            if time.monotonic() - last_save > SAVE_EVERY_S:
                _save(root, rows)
                last_save = time.monotonic()
    finally:
        if detector is not None:
            detector.close()
        close()
        if todo or set(cached) != set(rows):
            _save(root, rows)
    ordered = sorted(rows.values(), key=lambda r: r.path)
    return PrivacyAudit(ordered, faces_checked=faces, reused=reused, seconds=time.perf_counter() - started)
