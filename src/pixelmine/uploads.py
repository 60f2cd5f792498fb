"""Check an image that arrives as bytes (an HTTP upload) with ingest's own validation, and hold it in a
temporary file for the stages that read files (prediction, similarity search).

The same classification as ``pixelmine ingest`` applies (:func:`pixelmine.ingest.validate_file`): an
empty, truncated, corrupt, non-image or oversized upload is refused with the status and the reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .fileio import atomic_path
from .ingest.validate import ValidationLimits, validate_file

# Content types a client may declare for an image part; anything else is refused before decoding.
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024  # per file
    max_pixels: int = 50_000_000  # width x height, checked from the header before decoding
    min_side: int = 8


class UploadError(InputError):
    """An uploaded file is not a usable image. ``status`` is the ingest status (``truncated``, ...)."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


@dataclass
class UploadedImage:
    """A validated upload, in a private temporary file until :meth:`discard`."""

    path: str
    name: str  # the client's file name, for messages only (never used as a path)
    sha256: str
    format: str
    width: int
    height: int

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def check_content_type(content_type: str | None, name: str) -> None:
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared and not declared.startswith(ACCEPTED_CONTENT_TYPES):
        raise UploadError(f"upload {name!r} is declared as {declared!r}; send an image "
                          "(image/jpeg, image/png, ... or application/octet-stream)", "not_an_image")


def accept_upload(data: bytes, *, name: str = "upload", content_type: str | None = None,
                  limits: UploadLimits = UploadLimits(), directory: str | None = None) -> UploadedImage:
    """Validate ``data`` as an image; returns it stored in a temporary file, or raises UploadError."""
    name = _display_name(name)
    check_content_type(content_type, name)
    if len(data) > limits.max_bytes:
        raise UploadError(f"upload {name!r} is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes per file",
                          "too_large")
    handle, path = tempfile.mkstemp(prefix="pixelmine-upload-", suffix=".img", dir=directory)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    record = validate_file(path, ValidationLimits(max_pixels=limits.max_pixels, max_bytes=limits.max_bytes,
                                                  min_side=limits.min_side, phash=False))
    if record.status != "ok":
        os.unlink(path)
        raise UploadError(f"upload {name!r} was refused: {record.status}: {record.error}", record.status)
    return UploadedImage(path=path, name=name, sha256=record.sha256, format=record.format,
                         width=record.width, height=record.height)


def _display_name(name: str | None) -> str:
    text = os.path.basename(str(name or "upload"))[:120]
    return "".join(ch if ch.isprintable() else "?" for ch in text) or "upload"


UPLOADS_DIR = "uploads"  # in the workspace: where POST /ingest keeps the images it catalogues
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp",
               "HEIF": ".heic", "AVIF": ".avif"}


def ingest_uploads(workspace, uploads: list[UploadedImage], *, label: str | None = None) -> list[dict]:
    """Keep validated uploads in the workspace's ``uploads/`` folder (named by content hash, so a repeat is
    stored once) and catalogue them like ``pixelmine ingest``; one ``image`` event each, stored in the
    catalog's event log (what ``GET /events`` streams). The temporary files are consumed."""
    from .catalog import utc_now

    folder = Path(workspace.root) / UPLOADS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    known = {row["id"] for row in workspace.catalog.query(
        f"SELECT id FROM images WHERE id IN ({','.join('?' * len(uploads))})", [u.sha256 for u in uploads])} \
        if uploads else set()
    kept = []
    for upload in uploads:
        target = folder / f"{upload.sha256[:16]}{_EXTENSIONS.get(upload.format, '.img')}"
        if not target.exists():
            with atomic_path(target) as partial:  # the upload's temporary file may be on another file system
                shutil.copyfile(upload.path, partial)
        upload.discard()
        kept.append((upload, target))
    if kept:
        if label is not None:
            from .corrections import check_label, record_correction

            label = check_label(label)
        workspace.ingest([str(target) for _, target in kept], progress=False, workers=1)
        if label is not None:
            for upload, _ in kept:
                record_correction(workspace.catalog, upload.sha256, "relabel", label, source="api")
    events = [{"type": "image", "at": utc_now(), "path": str(target), "image_id": upload.sha256, "status": "ok",
               "source": "upload", "name": upload.name, "format": upload.format,
               "width": upload.width, "height": upload.height,
               "duplicate_of": upload.sha256 if upload.sha256 in known else None,
               "flags": ["duplicate"] if upload.sha256 in known else []} for upload, target in kept]
    workspace.catalog.add_events(events)
    return events
