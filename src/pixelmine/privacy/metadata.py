"""What an image file carries besides its pixels, read from its bytes without decoding them.

    meta = read_metadata("photos/IMG_0042.jpg")
    meta.location        # ['EXIF GPS IFD: GPSLatitude', ..., 'XMP: exif:GPSLatitude', 'IPTC: City']
    meta.serial_numbers  # ['EXIF: BodySerialNumber = 0420123']
    meta.owners          # ['EXIF: Artist = Jane Doe', 'XMP: dc:creator = Jane Doe']
    meta.thumbnails      # ['EXIF IFD1 thumbnail'] (has_thumbnail: any of them)

Where each format keeps it:
- JPEG: APP1 ``Exif`` (a TIFF block: IFD0, Exif, GPS, IFD1 with the thumbnail), APP1 XMP (and extended
  XMP), APP13 Photoshop/IPTC, JFIF and JFXX thumbnails; and whatever follows EOI (Multi-Picture previews
  are whole JPEGs with their own EXIF: they are read too, as "trailer image").
- PNG: the eXIf chunk; iTXt ``XML:com.adobe.xmp``; ImageMagick's tEXt/zTXt "Raw profile type exif/xmp/iptc".
- WebP: the RIFF ``EXIF`` and ``XMP `` chunks.
- HEIC/HEIF/AVIF: the Exif and XMP items, through pillow-heif (no pixels are decoded); Pillow for AVIF
  when pillow-heif cannot open it.
- TIFF: the file's own IFDs (and its XMP, IPTC and Photoshop tags).
- anything else Pillow opens: its ``exif`` and ``xmp`` info.

``orientation`` is the EXIF value as stored (for HEIF, libheif also turns the pixels by the container's own
rotation when decoding). ``captured_at`` is EXIF DateTimeOriginal, else DateTime, else XMP's
exif:DateTimeOriginal / photoshop:DateCreated / xmp:CreateDate, as "YYYY-MM-DDTHH:MM:SS" (no time zone).
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import asdict, dataclass, field

from . import exif, iptc, xmp
from .containers import (XMP_EXTENSION_HEADER, XMP_HEADER, ContainerError, jpeg_layout, png_chunks, png_text,
                         raw_profile, riff_chunks, sniff)

MAX_TRAILER_IMAGES = 8  # embedded JPEGs read after EOI (MPF previews); more is not a camera's doing
_LOCATION_TEXT_KEYS = re.compile(r"^(?:gps.*|location|city|country|latitude|longitude|geo.*)$", re.I)
_OWNER_TEXT_KEYS = {"author", "copyright", "artist", "owner"}
_EXIF_DATE = re.compile(r"^(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class ImageMetadata:
    path: str
    format: str | None  # JPEG, PNG, WEBP, HEIF, AVIF, TIFF, or Pillow's name
    orientation: int | None = None  # EXIF 1..8 as stored; None when absent
    camera_make: str | None = None
    camera_model: str | None = None
    captured_at: str | None = None  # "YYYY-MM-DDTHH:MM:SS"
    location: list[str] = field(default_factory=list)  # names of the location fields found
    serial_numbers: list[str] = field(default_factory=list)  # "EXIF: BodySerialNumber = 123"
    owners: list[str] = field(default_factory=list)  # "EXIF: Artist = Jane Doe"
    thumbnails: list[str] = field(default_factory=list)  # embedded previews: "EXIF IFD1 thumbnail", ...
    blocks: list[str] = field(default_factory=list)  # metadata blocks present: EXIF, XMP, IPTC, ...
    error: str | None = None  # what could not be read (the lists hold what could)

    @property
    def has_thumbnail(self) -> bool:
        return bool(self.thumbnails)

    @property
    def has_location(self) -> bool:
        return bool(self.location)

    def to_dict(self) -> dict:
        return {**asdict(self), "has_thumbnail": self.has_thumbnail}


class _Collector:
    """Accumulates what the blocks of one file say; the first value of a single-valued field wins."""

    def __init__(self):
        self.values: dict[str, object] = {}
        self.xmp_values: dict[str, object] = {}
        self.lists: dict[str, list[str]] = {"location": [], "serial_numbers": [], "owners": [], "thumbnails": [],
                                            "blocks": []}
        self.prefix = ""

    def add(self, kind: str, item: str) -> None:
        item = self.prefix + item
        if item not in self.lists[kind]:
            self.lists[kind].append(item)

    def first(self, name: str, value, *, from_xmp: bool = False) -> None:
        target = self.xmp_values if from_xmp else self.values
        if value not in (None, "") and name not in target:
            target[name] = value

    def exif(self, block: bytes, *, whole_tiff: bool = False) -> None:
        """One TIFF block: an EXIF payload (without ``Exif\\0\\0``), or a TIFF file (``whole_tiff``)."""
        self.add("blocks", "EXIF" if not whole_tiff else "TIFF tags")
        tiff = exif.Tiff(block)
        orientation = tiff.tag_value("IFD0", exif.ORIENTATION)
        if isinstance(orientation, int) and 1 <= orientation <= 8:
            self.first("orientation", orientation)
        self.first("camera_make", _clean_text(tiff.tag_value("IFD0", 0x010F)))
        self.first("camera_model", _clean_text(tiff.tag_value("IFD0", 0x0110)))
        self.first("captured_at", _iso(tiff.tag_value("Exif", 0x9003)))
        self.first("modified_at", _iso(tiff.tag_value("IFD0", 0x0132)))
        if "GPS" in tiff.ifds:
            names = [exif.GPS_TAGS.get(e.tag, f"0x{e.tag:04X}") for e in tiff.ifds["GPS"].entries]
            for name in names or ["(empty)"]:
                self.add("location", f"EXIF GPS IFD: {name}")
        elif any(ifd.find(exif.GPS_IFD) for ifd in tiff.ifds.values()):
            self.add("location", "EXIF GPS IFD: (unreadable)")
        for ifd_name in ("IFD0", "Exif"):
            for tags, kind in ((exif.SERIAL_TAGS, "serial_numbers"), (exif.OWNER_TAGS, "owners")):
                for tag, name in tags.items():
                    value = tiff.tag_value(ifd_name, tag)
                    if tag == 0x9C9D and isinstance(value, bytes):  # XPAuthor: UCS-2 little-endian
                        value = value.decode("utf-16-le", "replace").rstrip("\x00")
                    value = _clean_text(value)
                    if value:
                        self.add(kind, f"EXIF: {name} = {value}")
        if whole_tiff:
            for tag, handler in ((0x02BC, self.xmp), (0x83BB, self.iptc_any), (0x8649, self.iptc_any)):
                entry = tiff.ifds["IFD0"].find(tag) if "IFD0" in tiff.ifds else None
                if entry is not None and entry.size:  # stored as BYTE, UNDEFINED or LONG: the bytes as they are
                    handler(tiff.data[entry.value_at:entry.value_at + entry.size])
            for name in tiff.ifds:
                subfile = tiff.tag_value(name, exif.NEW_SUBFILE_TYPE)
                if name != "IFD0" and isinstance(subfile, int) and subfile & 1:
                    self.add("thumbnails", f"TIFF reduced-resolution {name}")
            if tiff.ifds.get("IFD0") and tiff.ifds["IFD0"].find(exif.SUB_IFDS):
                self.add("thumbnails", "TIFF SubIFDs (previews)")
        elif tiff.has_thumbnail():
            self.add("thumbnails", "EXIF IFD1 thumbnail")

    def xmp(self, payload: bytes) -> None:
        self.add("blocks", "XMP")
        text = xmp.decode(payload)
        for name, _ in xmp.properties(text, xmp.is_location):
            self.add("location", f"XMP: {name}")
        for name, value in xmp.properties(text, xmp.is_serial):
            self.add("serial_numbers", f"XMP: {name} = {value}")
        for name, value in xmp.properties(text, xmp.is_owner):
            self.add("owners", f"XMP: {name} = {value}")
        for name, _ in xmp.properties(text, xmp.is_thumbnail):
            self.add("thumbnails", f"XMP {name}")
        wanted = {"tiff:make": "camera_make", "tiff:model": "camera_model", "tiff:orientation": "orientation",
                  "exif:datetimeoriginal": "captured_at", "photoshop:datecreated": "captured_at",
                  "xmp:createdate": "captured_at"}
        for name, value in xmp.properties(text, lambda n: n.lower() in wanted):
            field_name = wanted[name.lower()]
            if field_name == "orientation":
                value = int(value) if value.strip().isdigit() and 1 <= int(value) <= 8 else None
            elif field_name == "captured_at":
                value = _iso(value)
            self.first(field_name, value, from_xmp=True)

    def iptc_block(self, block: bytes) -> None:
        self.add("blocks", "IPTC")
        content = iptc.read_block(block)
        for item in content.location:
            self.add("location", item)
        for item in content.owners:
            self.add("owners", item)
        for item in content.thumbnails:
            self.add("thumbnails", item)
        for resource in iptc.parse_resources(block):
            if resource.id == 0x0424:
                self.xmp(resource.data)
            elif resource.id in (0x0422, 0x0423):
                self._exif_payload(resource.data)

    def iptc_any(self, data: bytes) -> None:
        """A Photoshop resource block, or bare IIM datasets (TIFF's IPTC tag, ImageMagick's profiles)."""
        if data[:4] == b"8BIM":
            self.iptc_block(data)
        elif data[:1] == b"\x1c":
            self.iptc_block(iptc.build_resources([iptc.Resource(b"8BIM", iptc.IPTC_RESOURCE, b"", data)]))

    def _exif_payload(self, payload: bytes) -> None:
        _, block = exif.split_header(payload)
        self.exif(block)

    def result(self, path: str, file_format: str | None, error: str | None) -> ImageMetadata:
        merged = {**self.xmp_values, **self.values}
        captured = merged.get("captured_at") or self.values.get("modified_at") or self.xmp_values.get("captured_at")
        return ImageMetadata(path=path, format=file_format, orientation=merged.get("orientation"),
                             camera_make=merged.get("camera_make"), camera_model=merged.get("camera_model"),
                             captured_at=captured, error=error, **self.lists)


def _clean_text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    return value or None


def _iso(value) -> str | None:
    """EXIF "2021:06:01 12:34:56" or XMP "2021-06-01T12:34:56.5+02:00" as "2021-06-01T12:34:56"."""
    if not isinstance(value, str):
        return None
    match = _EXIF_DATE.match(value.strip())
    if not match or match.group(1) == "0000":
        return None
    year, month, day, hour, minute, second = match.groups()
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}"


# -- per format ----------------------------------------------------------------------------------------
def _read_jpeg(data: bytes, found: _Collector, *, depth: int = 0) -> None:
    layout = jpeg_layout(data)
    extensions: dict[bytes, dict[int, bytes]] = {}
    for segment in layout.segments:
        kind, payload = segment.kind, segment.payload
        if kind == "exif":
            found._exif_payload(payload)
        elif kind == "xmp":
            found.xmp(payload[len(XMP_HEADER):])
        elif kind == "xmp-extension" and len(payload) >= len(XMP_EXTENSION_HEADER) + 40:
            start = len(XMP_EXTENSION_HEADER)
            guid, offset = payload[start:start + 32], struct.unpack_from(">I", payload, start + 36)[0]
            extensions.setdefault(guid, {})[offset] = payload[start + 40:]
        elif kind == "iptc":
            found.iptc_block(payload[len(iptc.PHOTOSHOP_HEADER):])
        elif kind == "jfif" and len(payload) >= 14 and payload[12] and payload[13]:
            found.add("thumbnails", f"JFIF thumbnail ({payload[12]}x{payload[13]})")
        elif kind == "jfxx":
            found.add("thumbnails", "JFXX thumbnail")
        elif kind == "comment":
            found.add("blocks", "JPEG comment")
    for parts in extensions.values():
        found.xmp(b"".join(parts[offset] for offset in sorted(parts)))
    trailer = data[layout.image_end:]
    if depth == 0 and trailer.strip(b"\x00"):
        found.add("thumbnails", f"data after the image's end ({len(trailer)} bytes)")
        at, images = 0, 0
        while images < MAX_TRAILER_IMAGES:
            at = trailer.find(b"\xff\xd8\xff", at)
            if at < 0:
                break
            images += 1
            inner = _Collector()
            inner.prefix = "trailer image: "
            try:
                _read_jpeg(trailer[at:], inner, depth=1)
            except (ContainerError, exif.ExifError, ValueError, struct.error):
                pass
            for kind in ("location", "serial_numbers", "owners", "thumbnails"):
                for item in inner.lists[kind]:
                    found.add(kind, item)
            at += 3


def _read_png(data: bytes, found: _Collector) -> None:
    for chunk in png_chunks(data):
        if chunk.type == b"eXIf":
            found._exif_payload(chunk.data)
        elif chunk.type in (b"tEXt", b"zTXt", b"iTXt"):
            decoded = png_text(chunk)
            if decoded is None:
                found.add("blocks", f"PNG {chunk.type.decode()} (unreadable)")
                continue
            keyword, text = decoded
            key = keyword.lower()
            if key == "xml:com.adobe.xmp":
                found.xmp(text)
            elif key.startswith("raw profile type "):
                profile = raw_profile(text)
                kind = key[len("raw profile type "):]
                if profile is None:
                    continue
                if kind in ("exif", "app1"):
                    found._exif_payload(profile)
                elif kind == "xmp":
                    found.xmp(profile)
                elif kind in ("iptc", "8bim"):
                    found.iptc_any(profile)
            else:
                found.add("blocks", "PNG text")
                value = _clean_text(text.decode("utf-8", "replace"))
                if _LOCATION_TEXT_KEYS.match(keyword):
                    found.add("location", f"PNG text: {keyword}")
                elif key in _OWNER_TEXT_KEYS and value:
                    found.add("owners", f"PNG text: {keyword} = {value}")


def _read_webp(data: bytes, found: _Collector) -> None:
    for fourcc, payload in riff_chunks(data):
        if fourcc == b"EXIF":
            found._exif_payload(payload)
        elif fourcc == b"XMP ":
            found.xmp(payload)


def _read_heif(data: bytes, found: _Collector) -> None:
    try:
        import pillow_heif

        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        info = heif.info
    except (ImportError, ValueError, RuntimeError, OSError):  # no pillow-heif, or a codec it lacks: Pillow
        info = _pillow_info(data)[1]
    if info.get("exif"):
        found._exif_payload(info["exif"])
    if info.get("xmp"):
        found.xmp(info["xmp"])
    if info.get("thumbnails"):
        found.add("thumbnails", f"HEIF thumbnail items ({len(info['thumbnails'])})")


def _pillow_info(data: bytes) -> tuple[str | None, dict]:
    from PIL import Image

    from ..imaging.plugins import register_optional_decoders

    register_optional_decoders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:  # reads the header only; no pixels are decoded
            return image.format, dict(image.info)


def _read_other(data: bytes, found: _Collector) -> str | None:
    file_format, info = _pillow_info(data)
    exif_payload = info.get("exif")
    if isinstance(exif_payload, bytes) and exif_payload:
        found._exif_payload(exif_payload)
    xmp_payload = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp_payload, str):
        xmp_payload = xmp_payload.encode("utf-8")
    if isinstance(xmp_payload, bytes) and xmp_payload:
        found.xmp(xmp_payload)
    return file_format


_READERS = {"JPEG": _read_jpeg, "PNG": _read_png, "WEBP": _read_webp, "HEIF": _read_heif, "AVIF": _read_heif,
            "TIFF": lambda data, found: found.exif(data, whole_tiff=True)}


def metadata_of_bytes(data: bytes, *, path: str = "") -> ImageMetadata:
    """:func:`read_metadata` for bytes already in memory."""
    found = _Collector()
    file_format, error = sniff(data), None
    try:
        if file_format in _READERS:
            _READERS[file_format](data, found)
        else:
            file_format = _read_other(data, found)
    except (ContainerError, exif.ExifError, ValueError, struct.error, IndexError, OSError, SyntaxError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a hostile file must give a row with its error, never a crash
        error = f"unexpected {type(exc).__name__} while reading metadata: {exc}"
    return found.result(path, file_format, error)


def read_metadata(path: str | os.PathLike) -> ImageMetadata:
    """What ``path`` carries (see the module docstring). Never raises for a broken or unreadable file:
    ``error`` says what went wrong, and the lists hold what could be read before it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return ImageMetadata(path=str(path), format=None, error=f"cannot read the file ({exc.strerror or exc}); "
                                                                 "check that it exists and is readable")
    return metadata_of_bytes(data, path=str(path))
