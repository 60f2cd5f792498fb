"""Optional Pillow decoders (HEIC/HEIF through pillow-heif), registered once per process."""

from __future__ import annotations

import logging

_log = logging.getLogger(__name__)
_registered = False


def register_optional_decoders() -> None:
    """Teach Pillow to open HEIC/HEIF when pillow-heif is installed; AVIF and WebP are Pillow's own."""
    global _registered
    if _registered:
        return
    _registered = True
    try:
        import pillow_heif
    except ImportError:
        _log.info("pillow-heif is not installed: HEIC files will be reported as unsupported_format")
        return
    pillow_heif.register_heif_opener()
