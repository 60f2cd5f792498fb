"""Tell what kind of file some bytes are from their first bytes, to explain files Pillow cannot open."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sniffed:
    image_format: str | None = None  # an image format the signature belongs to (JPEG, PNG, ...)
    other_kind: str | None = None  # a non-image kind (PDF document, HTML page, ...)
    decodable: bool = True  # False for image formats pixelmine has no decoder for


# (prefix, offset, name) of raster formats Pillow reads.
_IMAGE_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),
    (b"MM\x00+", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG2000"),
    (b"\xffO\xffQ", 0, "JPEG2000"),
    (b"DDS ", 0, "DDS"),
    (b"qoif", 0, "QOI"),
    (b"icns", 0, "ICNS"),
    (b"\x01\xda", 0, "SGI"),
    (b"SIMPLE  =", 0, "FITS"),
]

# Short signatures (2-4 bytes, zeros included) that a non-image could carry by chance, so they are tried
# only after every other kind. They tell a damaged animation or cursor (Pillow's fuzzed FLI files) from a
# file of unknown format.
_WEAK_IMAGE_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x11\xaf", 4, "FLI"),
    (b"\x12\xaf", 4, "FLC"),
    (b"\x00\x00\x02\x00", 0, "CUR or TGA"),  # an uncompressed TGA starts so too
]

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"dash", b"avc1"}

# Image formats without a decoder here: the file is an image, just not one we can read.
_UNDECODABLE: list[tuple[bytes, int, str]] = [
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
    (b"%!PS-Adobe", 0, "EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS"),
    (b"FUJIFILMCCD-RAW", 0, "RAF camera raw"),
]

_OTHER_SIGNATURES: list[tuple[bytes, str]] = [
    (b"%PDF", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (or an Office document)"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"\x7fELF", "executable program"),
    (b"MZ", "Windows executable"),
    (b"ID3", "MP3 audio"),
    (b"OggS", "Ogg audio/video"),
    (b"fLaC", "FLAC audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"{\\rtf", "RTF document"),
    (b"\xd0\xcf\x11\xe0", "legacy Office document"),
]


def _is_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


def sniff(data: bytes) -> Sniffed:
    head = data[:512]
    for prefix, offset, name in _IMAGE_SIGNATURES:
        if head[offset:offset + len(prefix)] == prefix:
            if name == "WEBP" and head[:4] != b"RIFF":
                continue
            return Sniffed(image_format=name)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return Sniffed(image_format="AVIF" if brand.startswith(b"avi") else "HEIF")
        if brand in _VIDEO_BRANDS:
            return Sniffed(other_kind="MP4/QuickTime video")
    for prefix, offset, name in _UNDECODABLE:
        if head[offset:offset + len(prefix)] == prefix:
            return Sniffed(image_format=name, decodable=False)
    if head[:4] == b"RIFF":
        return Sniffed(other_kind="RIFF media file (WAV audio or AVI video)")
    for prefix, name in _OTHER_SIGNATURES:
        if head.startswith(prefix):
            return Sniffed(other_kind=name)
    for prefix, offset, name in _WEAK_IMAGE_SIGNATURES:
        if head[offset:offset + len(prefix)] == prefix:
            return Sniffed(image_format=name)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return Sniffed(image_format="SVG", decodable=False)
    if stripped.startswith((b"<!doctype html", b"<html")):
        return Sniffed(other_kind="HTML page (often an error page saved in place of a download)")
    if stripped.startswith(b"<?xml"):
        return Sniffed(other_kind="XML document")
    if stripped.startswith((b"{", b"[")) and _is_text(head):
        return Sniffed(other_kind="JSON text")
    if _is_text(head):
        return Sniffed(other_kind="text file")
    return Sniffed()


def explain_unidentified(kind: Sniffed) -> tuple[str, str]:
    """(status, message) for bytes that no installed Pillow plugin recognised."""
    if kind.other_kind:
        return "not_an_image", f"this is a {kind.other_kind}, not an image; remove it from the image folder or fix its source"
    if kind.image_format and not kind.decodable:
        return "unsupported_format", (f"{kind.image_format} image, which pixelmine cannot decode; "
                                      "convert it to PNG or JPEG (e.g. with ImageMagick) and ingest the copy")
    if kind.image_format in ("HEIF", "AVIF"):
        return "unsupported_format", (f"{kind.image_format} image, but no decoder is installed; "
                                      "pip install pillow-heif")
    if kind.image_format:
        return "corrupt", (f"starts like a {kind.image_format} file but its header cannot be parsed; "
                           "re-export the image from its source")
    return "unsupported_format", ("not a format pixelmine recognises (its first bytes match no known image type); "
                                  "convert it to PNG or JPEG")
