"""Thumbnails of catalogued images, made once and cached in the workspace (``thumbnails/<size>/ab/<id>.jpg``).

EXIF orientation is applied, the first frame of an animation is used, transparency is composited on white.
JPEGs are decoded at a reduced size in the DCT domain (``Image.draft``), so a thumbnail of a 20 MP photo
costs a fraction of a full decode. The user's file is only read.
"""

from __future__ import annotations

import io
import os
import logging
import warnings
from pathlib import Path

from .corrections import ImageNotFoundError
from .errors import InputError, NotFittedError
from .fileio import atomic_write_bytes

SIZES = (128, 256, 512)  # longest side in pixels; a fixed set keeps the cache bounded
QUALITY = 85


def thumbnail_path(ws, image_id: str, size: int = 256) -> Path:
    """The cached JPEG thumbnail of ``image_id`` (made now when missing). Raises ImageNotFoundError for an
    unknown id, NotFittedError when the image cannot be shown (bad status, or no file left on disk)."""
    if size not in SIZES:
        raise InputError(f"thumbnail size must be one of {', '.join(map(str, SIZES))}; got {size!r}")
    if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
        raise ImageNotFoundError(f"{image_id!r} is not an image id (64 lowercase hex characters, the sha256 of "
                                 "the file)")
    target = ws.root / "thumbnails" / str(size) / image_id[:2] / f"{image_id}.jpg"
    if target.is_file():
        if _whole_jpeg(target):
            return target
        logging.getLogger(__name__).warning("the cached thumbnail %s is damaged; making it again", target)
    paths = decodable_paths(ws, image_id, "it has no thumbnail")
    errors = []
    for path in paths:
        try:
            data = make_thumbnail(path, size)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        _atomic_write(target, data)
        return target
    raise NotFittedError(f"image {image_id[:12]} has no readable file on disk any more"
                         + (f" ({errors[0]})" if errors else "") + "; re-run pixelmine ingest")


def decodable_paths(ws, image_id: str, consequence: str) -> list[str]:
    """The present paths of a catalogued image that decodes: ImageNotFoundError for an unknown id,
    NotFittedError (ending with ``consequence``, e.g. "it has no thumbnail") for an image with a bad status."""
    rows = ws.catalog.query("SELECT status FROM images WHERE id = ?", (image_id,))
    if not rows:
        raise ImageNotFoundError(f"no image with id {image_id!r} in the catalog")
    if rows[0]["status"] != "ok":
        raise NotFittedError(f"image {image_id[:12]} has status {rows[0]['status']!r}; it cannot be decoded, so "
                             f"{consequence} (see pixelmine files --problems)")
    return [r["path"] for r in ws.catalog.query(
        "SELECT path FROM paths WHERE image_id = ? AND present = 1 ORDER BY path", (image_id,))]


def make_thumbnail(source, size: int) -> bytes:
    """JPEG bytes of ``source`` (a path or bytes) scaled so its longest side is at most ``size``."""
    from PIL import Image, ImageOps

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(source) as image:
            if image.format == "JPEG":
                image.draft("RGB", (size, size))
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image = ImageOps.exif_transpose(image)
            image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            image = _flatten(image)
            out = io.BytesIO()
            image.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()


def _flatten(image):
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode == "I":
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return Image.fromarray((np.clip(array / top, 0, 1) * 255).astype("uint8")).convert("RGB")
    return image.convert("RGB")


def _whole_jpeg(path: Path) -> bool:
    """A cheap structural check: a complete JPEG starts with SOI (FF D8) and ends with EOI (FF D9)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8" and handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _atomic_write(target: Path, data: bytes) -> None:
    atomic_write_bytes(target, data)
