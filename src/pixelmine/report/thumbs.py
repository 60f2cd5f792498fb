"""Small JPEG thumbnails as ``data:`` URIs, made from the user's files (read only), cached per report."""

from __future__ import annotations

import base64
import logging

log = logging.getLogger(__name__)

SIDE = 112  # longest side of an embedded thumbnail, pixels (shown at up to 112 CSS px)


def data_uri(path: str | None, side: int = SIDE) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of the image at ``path``, or None when it cannot be read."""
    if not path:
        return None
    from ..thumbnails import make_thumbnail

    try:
        jpeg = make_thumbnail(path, side)
    except Exception as exc:  # any decoder failure: the report shows a placeholder instead
        log.info("no thumbnail for %s: %s", path, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


class Thumbnails:
    """image id -> data URI, made once per report (an image can appear in several sections)."""

    def __init__(self, paths: dict[str, str | None]):
        self.paths = paths
        self._cache: dict[str, str | None] = {}

    def __call__(self, image_id: str) -> str | None:
        if image_id not in self._cache:
            self._cache[image_id] = data_uri(self.paths.get(image_id))
        return self._cache[image_id]
