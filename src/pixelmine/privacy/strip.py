"""Cleaned copies of image files: location, thumbnails and (on request) all other metadata removed.

    result = clean_bytes(Path("IMG_0042.jpg").read_bytes())                 # location + thumbnails out
    result = clean_bytes(data, strip_metadata=True)                          # everything but colour
    Path("clean" + result.extension).write_bytes(result.data)
    result.removed            # ['EXIF GPS IFD (GPSLatitudeRef, GPSLatitude, ...)', 'EXIF IFD1 thumbnail (5120 bytes)']
    result.pixels_identical   # True: the compressed pixel data was copied byte for byte

Per format:
- **JPEG**: the header segments are rewritten and everything from the first SOS to EOI is copied byte for
  byte. The EXIF block is edited in place (:mod:`.exif`: GPS IFD and IFD1 out, maker notes intact); XMP
  loses its location properties (:mod:`.xmp`; the whole packet when the edit cannot be verified); the
  Photoshop/IPTC block its place datasets and thumbnails (:mod:`.iptc`). Always removed: thumbnails (EXIF
  IFD1, JFIF, JFXX, Photoshop, XMP) and whatever follows EOI (Multi-Picture previews: whole JPEGs of the
  unedited original, with their own GPS) with the MPF index that points there. ``strip_metadata`` keeps only
  APP0 JFIF, APP2 ICC_PROFILE and APP14 Adobe (they decide how colours decode) and, when the image is not
  stored upright, an EXIF block holding only Orientation, so that it is still shown upright.
- **PNG**: chunks are filtered (IDAT untouched); eXIf edited like JPEG's EXIF; XMP and ImageMagick "Raw
  profile" texts cleaned or dropped; with ``strip_metadata`` every text chunk, tIME and unknown ancillary
  chunk goes. Few readers honour a PNG's EXIF orientation, so one other than 1 is applied to the pixels
  and the image re-encoded as PNG (lossless).
- **WebP**: RIFF chunks filtered the same way, the VP8X flags and the RIFF size fixed; an orientation other
  than 1 is applied and the image re-encoded as lossless WebP.
- **HEIF, AVIF, TIFF and the rest**: decoded (pillow-heif for HEIF), turned upright, written as PNG; their
  EXIF (orientation reset to 1) and XMP come along, cleaned, unless ``strip_metadata``.

Every result is read again (:func:`.metadata.metadata_of_bytes`) before it is returned: when a location
field or a thumbnail is still found, the file is cleaned again with every metadata block removed, and an
error is raised if even that leaves one.

:func:`apply_pixels` writes changed pixels (faces painted out) with the same metadata rules: JPEG at
quality 95 with the original's chroma subsampling, WebP as lossless WebP, everything else as PNG; upright,
orientation 1.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import asdict, dataclass, field

from . import exif, iptc, xmp
from .containers import (XMP_EXTENSION_HEADER, XMP_HEADER, Chunk, ContainerError, JpegLayout, build_png, build_webp,
                         jpeg_layout, jpeg_segment, png_chunks, png_text, raw_profile, riff_chunks, sniff)
from .metadata import metadata_of_bytes
from ..errors import InputError

log = logging.getLogger(__name__)

JPEG_QUALITY = 95  # re-encoded JPEGs (changed pixels only); visually lossless for photos
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_COLOUR_KINDS = {"jfif", "icc", "adobe"}  # JPEG segments that change how the pixels decode
# PNG chunks that describe how to decode or show the pixels (never metadata about the photographer)
_PNG_STRUCTURE = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
                  b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT", b"cICP", b"mDCv", b"cLLi"}
_PNG_TEXT = {b"tEXt", b"zTXt", b"iTXt"}
# PNG chunks carried from an original into a re-encoded copy (Pillow writes the pixel structure itself)
_PNG_CARRIED_COLOUR = {b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCv", b"cLLi"}
_WEBP_STRUCTURE = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"}
_LOCATION_TEXT_KEYS = ("gps", "location", "city", "country", "latitude", "longitude", "geo")


class StripError(InputError):
    """A file that could not be cleaned (damaged, or metadata survived every attempt)."""


@dataclass
class CleanResult:
    data: bytes  # the cleaned file
    format: str  # JPEG, PNG or WEBP
    extension: str  # .jpg, .png, .webp
    removed: list[str] = field(default_factory=list)  # what was taken out, in words
    pixels_identical: bool = True  # the compressed pixel data is the original's, byte for byte
    lossless: bool = True  # decoded pixels equal the original's (turned upright when it was re-encoded)
    reencoded: bool = False
    note: str | None = None  # why it was re-encoded or converted
    orientation: int | None = None  # the EXIF orientation the copy still needs (JPEG kept as stored)

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "data"} | {"bytes": len(self.data)}


@dataclass(frozen=True)
class _Rules:
    location: bool  # take location out
    everything: bool  # take all metadata out (colour information stays)


# -- blocks shared by every container ------------------------------------------------------------------
def _clean_exif(block: bytes, rules: _Rules, removed: list[str], *, keep_orientation: bool = True) -> bytes | None:
    """The EXIF TIFF block to keep (None: none), with what was removed appended to ``removed``."""
    orientation = exif.orientation_of(block)
    minimal = exif.orientation_only(orientation) if keep_orientation and orientation not in (None, 1) else None
    if rules.everything:
        removed.append("EXIF" + (f" (kept only Orientation = {orientation})" if minimal else ""))
        return minimal
    try:
        cleaned, what = exif.clean_tiff(block, gps=rules.location, thumbnail=True)
    except exif.ExifError as exc:
        removed.append(f"EXIF (could not be edited safely: {exc}; dropped"
                       + (f", kept Orientation = {orientation})" if minimal else ")"))
        return minimal
    removed.extend(what)
    return cleaned


def _clean_xmp(payload: bytes, rules: _Rules, removed: list[str]) -> bytes | None:
    if rules.everything:
        removed.append("XMP packet")
        return None
    text = xmp.decode(payload)
    edited, thumbnails = xmp.remove(text, xmp.is_thumbnail)
    names = thumbnails
    if edited is not None and rules.location:
        edited, places = xmp.remove(edited, xmp.is_location)
        names = names + places
    if not names:
        return payload
    if edited is None:
        removed.append(f"XMP packet (it held {', '.join(names)} and could not be edited safely)")
        return None
    removed.extend(f"XMP {name}" for name in names)
    return edited.encode("utf-8")


# -- JPEG ------------------------------------------------------------------------------------------------
def _jpeg_segments(data: bytes, rules: _Rules, removed: list[str]) -> tuple[list[tuple[str, bytes]], JpegLayout]:
    """(kind, encoded segment) of the header segments to keep, in order; and the layout."""
    layout = jpeg_layout(data)
    extension_text = b"".join(s.payload[len(XMP_EXTENSION_HEADER) + 40:] for s in layout.segments
                              if s.kind == "xmp-extension")
    extension = xmp.decode(extension_text) if extension_text else ""
    drop_extensions = bool(extension) and (rules.everything or bool(xmp.properties(extension, xmp.is_thumbnail))
                                           or (rules.location and bool(xmp.properties(extension, xmp.is_location))))
    kept: list[tuple[str, bytes]] = []
    for segment in layout.segments:
        kind, payload = segment.kind, segment.payload
        raw = data[segment.start:segment.end]
        if not (0xE0 <= segment.marker <= 0xEF or segment.marker == 0xFE):
            kept.append((kind, raw))  # tables and frame headers
        elif kind == "exif":
            header, block = exif.split_header(payload)
            cleaned = _clean_exif(block, rules, removed)
            if cleaned is not None:
                if cleaned != block:
                    raw = jpeg_segment(0xE1, (header or exif.EXIF_HEADER) + cleaned)
                kept.append((kind, raw))
        elif kind == "xmp":
            cleaned = _clean_xmp(payload[len(XMP_HEADER):], rules, removed)
            if cleaned is not None:
                kept.append((kind, jpeg_segment(0xE1, XMP_HEADER + cleaned)))
        elif kind == "xmp-extension":
            if drop_extensions:
                removed.append("extended XMP segment")
            else:
                kept.append((kind, raw))
        elif kind == "iptc":
            if rules.everything:
                removed.append("APP13 Photoshop/IPTC block")
                continue
            block, what = iptc.clean_block(payload[len(iptc.PHOTOSHOP_HEADER):], location=rules.location)
            removed.extend(what)
            if block:
                kept.append((kind, raw if not what else jpeg_segment(0xED, iptc.PHOTOSHOP_HEADER + block)))
        elif kind == "jfif":
            if len(payload) >= 14 and (payload[12] or payload[13]):
                removed.append(f"JFIF thumbnail ({payload[12]}x{payload[13]})")
                raw = jpeg_segment(0xE0, payload[:12] + b"\x00\x00")
            kept.append((kind, raw))
        elif kind == "jfxx":
            removed.append("JFXX thumbnail")
        elif kind == "mpf":
            removed.append("MPF index of the preview images after the image")
        elif kind in _COLOUR_KINDS:
            kept.append((kind, raw))
        elif rules.everything:
            removed.append("JPEG comment" if kind == "comment" else f"{kind.upper()} segment")
        else:
            kept.append((kind, raw))
    trailer = len(data) - layout.image_end
    if trailer:
        removed.append(f"{trailer} bytes after the image's end (previews or maker data)")
    return kept, layout


def _clean_jpeg(data: bytes, rules: _Rules) -> CleanResult:
    removed: list[str] = []
    kept, layout = _jpeg_segments(data, rules, removed)
    out = b"\xff\xd8" + b"".join(raw for _, raw in kept) + data[layout.scan_start:layout.image_end]
    orientation = next((exif.orientation_of(exif.split_header(raw[4:])[1]) for kind, raw in kept if kind == "exif"),
                       None)
    return CleanResult(out, "JPEG", ".jpg", removed, orientation=orientation)


# -- PNG -------------------------------------------------------------------------------------------------
def _png_exif_orientation(chunks: list[Chunk]) -> int | None:
    for chunk in chunks:
        if chunk.type == b"eXIf":
            return exif.orientation_of(exif.split_header(chunk.data)[1])
    return None


def _itxt(keyword: str, text: bytes) -> Chunk:
    return Chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text)


def _png_kept(chunks: list[Chunk], rules: _Rules, removed: list[str], *, reset_orientation: bool) -> list[Chunk]:
    kept = []
    for chunk in chunks:
        name = chunk.type.decode("latin-1")
        if chunk.type in _PNG_STRUCTURE:
            kept.append(chunk)
        elif chunk.type == b"eXIf":
            header, block = exif.split_header(chunk.data)
            cleaned = _clean_exif(block, rules, removed, keep_orientation=False)
            if cleaned is not None:
                if reset_orientation:
                    cleaned = exif.set_orientation(cleaned, 1)
                kept.append(Chunk(b"eXIf", header + cleaned))
        elif chunk.type in _PNG_TEXT:
            decoded = png_text(chunk)
            if rules.everything or decoded is None:
                removed.append(f"PNG {name} " + (repr(decoded[0]) if decoded else "(unreadable)"))
                continue
            keyword, text = decoded
            key = keyword.lower()
            if key == "xml:com.adobe.xmp":
                cleaned = _clean_xmp(text, rules, removed)
                if cleaned is not None:
                    if reset_orientation:
                        cleaned = xmp.reset_orientation(cleaned.decode("utf-8", "replace")).encode("utf-8")
                    kept.append(chunk if cleaned == text else _itxt(keyword, cleaned))
            elif key.startswith("raw profile type "):
                profile = raw_profile(text)
                inner = _profile_metadata(key, profile) if profile is not None else None
                # an edited copy would have to be hex-encoded again: a profile holding anything private goes whole
                private = inner is None or inner.error or inner.thumbnails or (rules.location and inner.location)
                if private or (reset_orientation and key.endswith(("exif", "app1"))):
                    removed.append(f"PNG {name} {keyword!r}")
                else:
                    kept.append(chunk)
            elif rules.location and any(word in key for word in _LOCATION_TEXT_KEYS):
                removed.append(f"PNG {name} {keyword!r}")
            else:
                kept.append(chunk)
        elif rules.everything:  # tIME and chunks this module does not know
            removed.append(f"PNG {name}")
        else:
            kept.append(chunk)
    return kept


def _profile_metadata(key: str, profile: bytes):
    """What an ImageMagick raw profile holds, read as the block it is."""
    kind = key[len("raw profile type "):]
    if kind in ("exif", "app1"):
        header = b"" if profile[:4] == b"Exif" else exif.EXIF_HEADER
        return metadata_of_bytes(b"\xff\xd8" + jpeg_segment(0xE1, header + profile[:65000]) + b"\xff\xd9")
    if kind == "xmp":
        return metadata_of_bytes(b"\xff\xd8" + jpeg_segment(0xE1, XMP_HEADER + profile[:65000]) + b"\xff\xd9")
    return metadata_of_bytes(b"\xff\xd8" + jpeg_segment(0xED, iptc.PHOTOSHOP_HEADER + profile[:65000]) + b"\xff\xd9")


def _clean_png(data: bytes, rules: _Rules) -> CleanResult:
    chunks = png_chunks(data)
    orientation = _png_exif_orientation(chunks)
    ihdr = chunks[0].data
    sixteen_bit_colour = len(ihdr) >= 10 and ihdr[8] == 16 and ihdr[9] in (2, 6)
    animated = any(chunk.type == b"acTL" for chunk in chunks)
    removed: list[str] = []
    if orientation not in (None, 1) and not (sixteen_bit_colour or animated):
        image = _decode_upright(data)
        kept = _png_kept(chunks, rules, removed, reset_orientation=True)
        return _encode_png(image, kept, removed, note=f"EXIF orientation {orientation} applied to the pixels "
                           "(few PNG readers honour it); re-encoded as PNG, losslessly",
                           keep_phys=orientation in (2, 3, 4))
    kept = _png_kept(chunks, rules, removed, reset_orientation=False)
    note = None
    if orientation not in (None, 1):
        # Pillow would lose bits of a 16-bit colour PNG or the frames of an APNG: keep the tag instead
        kept = [c for c in kept if c.type != b"eXIf"]
        kept.insert(1, Chunk(b"eXIf", exif.orientation_only(orientation)))
        note = f"orientation {orientation} kept as an EXIF tag ({'animated' if animated else '16-bit colour'} PNG)"
    return CleanResult(build_png(kept), "PNG", ".png", removed, note=note,
                       orientation=orientation if note else None)


def _encode_png(image, carried: list[Chunk], removed: list[str], *, note: str, keep_phys: bool = False) -> CleanResult:
    """``image`` as a PNG, with the metadata and colour chunks of ``carried`` put in before the pixels."""
    image = _png_mode(image)
    params = {"compress_level": 6}
    icc = image.info.get("icc_profile")
    if icc:
        params["icc_profile"] = icc
    if "transparency" in image.info:
        params["transparency"] = image.info["transparency"]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    written = png_chunks(buffer.getvalue())
    present = {chunk.type for chunk in written}
    extra = [c for c in carried if c.type not in present and c.type not in (
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"sBIT", b"bKGD", b"hIST", b"sPLT", b"acTL", b"fcTL", b"fdAT")
        and (keep_phys or c.type != b"pHYs") and not (icc and c.type == b"sRGB")]
    at = next(i for i, chunk in enumerate(written) if chunk.type in (b"PLTE", b"IDAT"))
    if any(chunk.type == b"PLTE" for chunk in written):
        # colour chunks must precede PLTE; text and eXIf may go anywhere before IDAT
        colour = [c for c in extra if c.type in _PNG_CARRIED_COLOUR]
        other = [c for c in extra if c.type not in _PNG_CARRIED_COLOUR]
        idat = next(i for i, chunk in enumerate(written) if chunk.type == b"IDAT")
        chunks = written[:at] + colour + written[at:idat] + other + written[idat:]
    else:
        chunks = written[:at] + extra + written[at:]
    return CleanResult(build_png(chunks), "PNG", ".png", removed, pixels_identical=False, reencoded=True,
                       note=note, orientation=None)


def _png_mode(image):
    """A mode PNG stores without loss where one exists (CMYK and float images become RGB)."""
    from ..imaging.decode import to_rgb

    if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        return image
    if image.mode in ("I;16B", "I;16L", "I;16N"):
        return image.convert("I;16")
    if image.mode in ("RGBa", "PA"):
        return image.convert("RGBA")
    if image.mode == "La":
        return image.convert("LA")
    converted = to_rgb(image)
    converted.info = dict(image.info) if image.mode != "CMYK" else {}  # a CMYK profile no longer applies
    return converted


# -- WebP ------------------------------------------------------------------------------------------------
def _webp_kept(chunks, rules: _Rules, removed: list[str], *, reset_orientation: bool) -> list[tuple[bytes, bytes]]:
    kept = []
    for fourcc, payload in chunks:
        if fourcc in _WEBP_STRUCTURE:
            kept.append((fourcc, payload))
        elif fourcc == b"EXIF":
            header, block = exif.split_header(payload)
            cleaned = _clean_exif(block, rules, removed, keep_orientation=not reset_orientation)
            if cleaned is not None:
                kept.append((fourcc, header + (exif.set_orientation(cleaned, 1) if reset_orientation else cleaned)))
        elif fourcc == b"XMP ":
            cleaned = _clean_xmp(payload, rules, removed)
            if cleaned is not None:
                if reset_orientation:
                    cleaned = xmp.reset_orientation(cleaned.decode("utf-8", "replace")).encode("utf-8")
                kept.append((fourcc, cleaned))
        elif rules.everything:
            removed.append(f"WebP chunk {fourcc.decode('latin-1')!r}")
        else:
            kept.append((fourcc, payload))
    return kept


def _encode_webp(image, exif_block: bytes | None, xmp_packet: bytes | None, removed, *, note: str) -> CleanResult:
    params = {"lossless": True, "quality": 100, "method": 4, "exact": True}
    if image.info.get("icc_profile"):
        params["icc_profile"] = image.info["icc_profile"]
    if exif_block:
        params["exif"] = exif_block
    if xmp_packet:
        params["xmp"] = xmp_packet
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", **params)
    return CleanResult(buffer.getvalue(), "WEBP", ".webp", removed, pixels_identical=False, reencoded=True,
                       note=note)


def _clean_webp(data: bytes, rules: _Rules) -> CleanResult:
    chunks = riff_chunks(data)
    orientation = next((exif.orientation_of(exif.split_header(p)[1]) for f, p in chunks if f == b"EXIF"), None)
    animated = any(fourcc == b"ANIM" for fourcc, _ in chunks)
    removed: list[str] = []
    if orientation not in (None, 1) and not animated:
        kept = _webp_kept(chunks, rules, removed, reset_orientation=True)
        block = next((exif.split_header(p)[1] for f, p in kept if f == b"EXIF"), None)
        packet = next((p for f, p in kept if f == b"XMP "), None)
        return _encode_webp(_decode_upright(data), block, packet, removed,
                            note=f"EXIF orientation {orientation} applied to the pixels; re-encoded as lossless WebP")
    kept = _webp_kept(chunks, rules, removed, reset_orientation=False)
    if orientation not in (None, 1) and not any(f == b"EXIF" for f, _ in kept):
        kept.append((b"EXIF", exif.orientation_only(orientation)))
    if not any(fourcc == b"VP8X" for fourcc, _ in kept) and any(f in (b"EXIF", b"XMP ", b"ICCP") for f, _ in kept):
        kept = _with_vp8x(data, kept)
    return CleanResult(build_webp(kept), "WEBP", ".webp", removed,
                       orientation=orientation if orientation not in (None, 1) else None,
                       note=f"orientation {orientation} kept as an EXIF tag (animated WebP)" if animated and
                       orientation not in (None, 1) else None)


def _with_vp8x(data: bytes, chunks):
    """A simple-format WebP given metadata chunks needs the extended header (VP8X) announcing them."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    has_alpha = any(fourcc == b"ALPH" for fourcc, _ in chunks) or (
        any(fourcc == b"VP8L" for fourcc, _ in chunks) and _vp8l_alpha(chunks))
    flags = 0x10 if has_alpha else 0
    header = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return [(b"VP8X", header)] + chunks


def _vp8l_alpha(chunks) -> bool:
    payload = next(p for f, p in chunks if f == b"VP8L")
    return len(payload) >= 5 and bool((payload[4] >> 4) & 1)


# -- everything else -------------------------------------------------------------------------------------
def _open(data: bytes):
    from PIL import Image

    from ..imaging.plugins import register_optional_decoders

    register_optional_decoders()
    image = Image.open(io.BytesIO(data))
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return image


def _decode_upright(data: bytes):
    """The first frame, turned upright, with the original's ICC profile and transparency in ``info``."""
    from PIL import ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = _open(data)
        info = {key: image.info[key] for key in ("icc_profile", "transparency") if image.info.get(key) is not None}
        image.load()
        upright = ImageOps.exif_transpose(image)
        upright.info = info
        return upright


def _convert_to_png(data: bytes, rules: _Rules, source_format: str | None) -> CleanResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = _open(data)
        source_format = source_format or image.format or "image"
        info = dict(image.info)
        frames = getattr(image, "n_frames", 1)
    upright = _decode_upright(data)
    removed: list[str] = []
    carried: list[Chunk] = []
    exif_payload = info.get("exif")
    if isinstance(exif_payload, bytes) and exif_payload and source_format != "TIFF":
        cleaned = _clean_exif(exif.split_header(exif_payload)[1], rules, removed, keep_orientation=False)
        if cleaned is not None:
            carried.append(Chunk(b"eXIf", exif.set_orientation(cleaned, 1)))
    elif source_format == "TIFF":
        held = metadata_of_bytes(data)
        what = [word for word, items in (("location", held.location), ("serial numbers", held.serial_numbers),
                                         ("owner names", held.owners)) if items]
        removed.append("TIFF tags (not carried into the PNG" + (f"; they held {', '.join(what)})" if what else ")"))
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    if isinstance(packet, bytes) and packet:
        cleaned = _clean_xmp(packet, rules, removed)
        if cleaned is not None:
            carried.append(_itxt("XML:com.adobe.xmp",
                                 xmp.reset_orientation(cleaned.decode("utf-8", "replace")).encode("utf-8")))
    if info.get("thumbnails"):
        removed.append(f"{source_format} thumbnail items ({len(info['thumbnails'])})")
    note = f"converted {source_format} to PNG (decoded, turned upright, written losslessly)"
    if frames > 1:
        note += f"; first of {frames} frames"
    return _encode_png(upright, carried, removed, note=note)


# -- the entry points ------------------------------------------------------------------------------------
def _clean_once(data: bytes, rules: _Rules) -> CleanResult:
    file_format = sniff(data)
    if file_format == "JPEG":
        return _clean_jpeg(data, rules)
    if file_format == "PNG":
        return _clean_png(data, rules)
    if file_format == "WEBP":
        return _clean_webp(data, rules)
    return _convert_to_png(data, rules, file_format)


def _survivors(result: CleanResult, rules: _Rules) -> list[str]:
    """What a second reading of the cleaned bytes still finds that should be gone."""
    found = metadata_of_bytes(result.data)
    if found.error:
        return [f"the cleaned file cannot be read back ({found.error})"]
    return found.thumbnails + (found.location if rules.location or rules.everything else []) + (
        found.serial_numbers + found.owners if rules.everything else [])


def _checked(make, rules: _Rules) -> CleanResult:
    """``make(rules)``, read back; cleaned again with every block removed when something survived."""
    result = make(rules)
    survivors = _survivors(result, rules)
    if not survivors:
        return result
    log.warning("metadata survived cleaning (%s); removing every metadata block", "; ".join(survivors))
    strict = _Rules(location=True, everything=True)
    again = make(strict)
    left = _survivors(again, strict)
    if left:
        raise StripError(f"could not remove {'; '.join(left)} from this file; leave it out of the export "
                         "(or convert it to PNG first) and report the file")
    again.removed.append(f"every metadata block (a second reading still found: {'; '.join(survivors)})")
    return again


def clean_bytes(data: bytes, *, strip_location: bool = True, strip_metadata: bool = False) -> CleanResult:
    """A cleaned copy of an image file's bytes (see the module docstring). Thumbnails are always removed;
    ``strip_location`` removes GPS and place names; ``strip_metadata`` removes every metadata block but
    colour information (and implies ``strip_location``). Raises StripError for a file that cannot be
    cleaned (a damaged header, or metadata that survived)."""
    rules = _Rules(location=strip_location or strip_metadata, everything=strip_metadata)
    try:
        return _checked(lambda r: _clean_once(data, r), rules)
    except StripError:
        raise
    except (ContainerError, ValueError, OSError, SyntaxError, EOFError) as exc:
        raise StripError(f"cannot clean this file ({type(exc).__name__}: {exc}); check that it is a complete "
                         "image, or leave it out") from exc


def apply_pixels(original: bytes, rgb, *, strip_location: bool = True, strip_metadata: bool = False) -> CleanResult:
    """The image ``rgb`` (upright H x W x 3 uint8, e.g. with faces painted out) written in the original's
    format family with the original's metadata cleaned by the same rules: JPEG at quality 95 with the
    original's chroma subsampling, WebP as lossless WebP, anything else as PNG; orientation 1."""
    import numpy as np
    from PIL import Image

    rules = _Rules(location=strip_location or strip_metadata, everything=strip_metadata)
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"apply_pixels needs an H x W x 3 uint8 RGB array; got shape {pixels.shape}")
    image = Image.fromarray(pixels, "RGB")
    file_format = sniff(original)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            probe = _open(original)
            icc = probe.info.get("icc_profile")
            sampling = _jpeg_sampling(probe) if file_format == "JPEG" else -1
        except (OSError, ValueError, SyntaxError) as exc:
            raise StripError(f"cannot read the original image ({type(exc).__name__}: {exc})") from exc
    if icc and icc[16:20] == b"RGB ":  # a CMYK or grey profile no longer describes these pixels
        image.info["icc_profile"] = icc

    def make(current: _Rules) -> CleanResult:
        removed: list[str] = []
        note = "pixels changed; "
        if file_format == "JPEG":
            return _jpeg_with_pixels(original, image, sampling, current, removed)
        if file_format == "WEBP":
            kept = _webp_kept(riff_chunks(original), current, removed, reset_orientation=True)
            block = next((exif.split_header(p)[1] for f, p in kept if f == b"EXIF"), None)
            packet = next((p for f, p in kept if f == b"XMP "), None)
            return _encode_webp(image, block, packet, removed, note=note + "re-encoded as lossless WebP")
        if file_format == "PNG":
            kept = _png_kept(png_chunks(original), current, removed, reset_orientation=True)
            return _encode_png(image, kept, removed, note=note + "re-encoded as PNG")
        converted = _convert_to_png(original, current, file_format)
        carried = [c for c in png_chunks(converted.data) if c.type in (b"eXIf", b"iTXt")]
        return _encode_png(image, carried, converted.removed,
                           note=note + f"written as PNG ({file_format or 'the original format'} converted)")

    try:
        result = _checked(make, rules)
    except StripError:
        raise
    except (ContainerError, ValueError, OSError) as exc:
        raise StripError(f"cannot write the changed pixels ({type(exc).__name__}: {exc})") from exc
    result.lossless = file_format != "JPEG"
    return result


def _jpeg_sampling(image) -> int:
    from PIL import JpegImagePlugin

    try:
        return JpegImagePlugin.get_sampling(image)
    except (AttributeError, KeyError, TypeError):
        return -1


def _jpeg_with_pixels(original: bytes, image, sampling: int, rules: _Rules, removed: list[str]) -> CleanResult:
    """A fresh JPEG of ``image`` carrying the original's cleaned metadata (EXIF orientation reset to 1)."""
    params = {"quality": JPEG_QUALITY, "optimize": True}
    if sampling in (0, 1, 2):
        params["subsampling"] = sampling
    if image.info.get("icc_profile"):
        params["icc_profile"] = image.info["icc_profile"]
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **params)
    fresh = buffer.getvalue()
    layout = jpeg_layout(fresh)
    kept, _ = _jpeg_segments(original, rules, removed)
    carried = []
    for kind, raw in kept:
        if kind == "exif":
            header, block = exif.split_header(raw[4:])
            carried.append(jpeg_segment(0xE1, header + exif.set_orientation(block, 1)))
        elif kind == "xmp":
            text = xmp.reset_orientation(xmp.decode(raw[4 + len(XMP_HEADER):]))
            carried.append(jpeg_segment(0xE1, XMP_HEADER + text.encode("utf-8")))
        elif kind in ("xmp-extension", "iptc", "comment") or kind.startswith("app") and kind not in ("app0", "app14"):
            carried.append(raw)
    if rules.everything:
        carried = []  # what _jpeg_segments kept of the EXIF was its orientation, and that is 1 now
    segments = [fresh[s.start:s.end] for s in layout.segments]
    first_other = next((i for i, s in enumerate(layout.segments) if s.kind != "jfif"), len(segments))
    out = (b"\xff\xd8" + b"".join(segments[:first_other]) + b"".join(carried) + b"".join(segments[first_other:])
           + fresh[layout.scan_start:layout.image_end])
    return CleanResult(out, "JPEG", ".jpg", removed, pixels_identical=False, lossless=False, reencoded=True,
                       note=f"pixels changed; re-encoded as JPEG at quality {JPEG_QUALITY}", orientation=None)
