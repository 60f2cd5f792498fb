"""The pieces of JPEG, PNG and WebP files, walked and put back together without touching pixel data.

- JPEG: marker segments from SOI up to the first SOS; from SOS the entropy-coded data (and, in a
  progressive file, the tables and scans between) run to EOI. Anything after EOI is a trailer (Multi-Picture
  previews, phone makers' blobs, embedded videos), not part of the image.
- PNG: length, type, data, CRC chunks after the 8-byte signature.
- WebP: a RIFF file of FourCC chunks (VP8/VP8L/VP8X, ALPH, ANIM/ANMF, ICCP, EXIF, XMP).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOS, EOI = 0xDA, 0xD9
_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
ICC_HEADER = b"ICC_PROFILE\x00"
MAX_TEXT = 32 << 20  # bytes a compressed PNG text chunk may inflate to; more is a decompression bomb


class ContainerError(ValueError):
    """The bytes are not the container they claim to be (or end too early to be walked)."""


# -- JPEG ----------------------------------------------------------------------------------------------
@dataclass
class Segment:
    marker: int  # 0xE0..0xEF for APP0..APP15, 0xFE for COM, ...
    start: int  # offset of its 0xFF
    end: int  # offset after it
    payload: bytes  # after the marker and the 2-byte length

    @property
    def kind(self) -> str:
        """What an application segment holds: exif, xmp, xmp-extension, iptc, jfif, jfxx, icc, mpf, adobe,
        comment, or the marker (app5, dqt, ...)."""
        p, m = self.payload, self.marker
        if m == 0xE1 and p[:4] == b"Exif":
            return "exif"
        if m == 0xE1 and p.startswith(XMP_HEADER):
            return "xmp"
        if m == 0xE1 and p.startswith(XMP_EXTENSION_HEADER):
            return "xmp-extension"
        if m == 0xED and p.startswith(b"Photoshop 3.0\x00"):
            return "iptc"
        if m == 0xE0 and p[:5] == b"JFIF\x00":
            return "jfif"
        if m == 0xE0 and p[:5] == b"JFXX\x00":
            return "jfxx"
        if m == 0xE2 and p.startswith(ICC_HEADER):
            return "icc"
        if m == 0xE2 and p[:4] == b"MPF\x00":
            return "mpf"
        if m == 0xEE and p[:5] == b"Adobe":
            return "adobe"
        if m == 0xFE:
            return "comment"
        if 0xE0 <= m <= 0xEF:
            return f"app{m - 0xE0}"
        return {0xDB: "dqt", 0xC4: "dht", 0xDD: "dri"}.get(m, f"marker-{m:02x}")


@dataclass
class JpegLayout:
    segments: list[Segment]  # SOI .. before the first SOS
    scan_start: int  # offset of the first SOS marker
    image_end: int  # offset after EOI (the file's end when EOI is missing)
    has_eoi: bool


def jpeg_layout(data: bytes) -> JpegLayout:
    if not data.startswith(JPEG_SOI):
        raise ContainerError("not a JPEG (no SOI marker)")
    segments, at = [], 2
    while True:
        if at >= len(data) or data[at] != 0xFF:
            raise ContainerError(f"expected a marker at byte {at}; the header is damaged")
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes before a marker
            at += 1
        if at + 1 >= len(data):
            raise ContainerError("the file ends inside the header")
        marker = data[at + 1]
        if marker == SOS:
            break
        if marker in _STANDALONE:
            at += 2
            continue
        if marker == EOI:
            raise ContainerError("EOI before any image data")
        if at + 4 > len(data):
            raise ContainerError("the file ends inside the header")
        length = struct.unpack_from(">H", data, at + 2)[0]
        if length < 2 or at + 2 + length > len(data):
            raise ContainerError(f"segment 0x{marker:02X} at byte {at} runs past the end of the file")
        segments.append(Segment(marker, at, at + 2 + length, data[at + 4:at + 2 + length]))
        at += 2 + length
    end, has_eoi = _find_eoi(data, at)
    return JpegLayout(segments, at, end, has_eoi)


def _find_eoi(data: bytes, at: int) -> tuple[int, bool]:
    """Offset after the EOI that ends the image starting with the SOS at ``at`` (scans, and the tables
    between the scans of a progressive file, are skipped by their lengths)."""
    size = len(data)
    while at + 2 <= size:
        marker = data[at + 1]
        if marker == EOI:
            return at + 2, True
        if at + 4 > size:
            break
        length = struct.unpack_from(">H", data, at + 2)[0]
        at += 2 + length
        if marker != SOS:
            if at + 2 > size or data[at] != 0xFF:
                return size, False
            continue
        while True:  # entropy-coded data: 0xFF00 is a stuffed byte, 0xFFD0-D7 restart markers
            at = data.find(b"\xff", at)
            if at < 0 or at + 1 >= size:
                return size, False
            following = data[at + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                at += 2
            elif following == 0xFF:
                at += 1
            else:
                break
    return size, False


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > 0xFFFF - 2:
        raise ContainerError(f"a JPEG segment holds at most 65533 bytes; got {len(payload)}")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


# -- PNG -----------------------------------------------------------------------------------------------
@dataclass
class Chunk:
    type: bytes
    data: bytes

    def encode(self) -> bytes:
        return (struct.pack(">I", len(self.data)) + self.type + self.data
                + struct.pack(">I", zlib.crc32(self.type + self.data) & 0xFFFFFFFF))


def png_chunks(data: bytes) -> list[Chunk]:
    if not data.startswith(PNG_SIGNATURE):
        raise ContainerError("not a PNG (no PNG signature)")
    chunks, at = [], 8
    while at + 12 <= len(data):
        length = struct.unpack_from(">I", data, at)[0]
        kind = data[at + 4:at + 8]
        if at + 12 + length > len(data):
            raise ContainerError(f"PNG chunk {kind!r} at byte {at} runs past the end of the file")
        chunks.append(Chunk(kind, data[at + 8:at + 8 + length]))
        at += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0].type != b"IHDR":
        raise ContainerError("PNG without an IHDR chunk")
    return chunks


def build_png(chunks: list[Chunk]) -> bytes:
    return PNG_SIGNATURE + b"".join(chunk.encode() for chunk in chunks)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT)
    if inflater.unconsumed_tail:
        raise ContainerError(f"a compressed PNG text chunk inflates to more than {MAX_TEXT >> 20} MB")
    return out


def png_text(chunk: Chunk) -> tuple[str, bytes] | None:
    """(keyword, text as bytes) of a tEXt, zTXt or iTXt chunk; None for other chunks or a damaged one."""
    keyword, separator, rest = chunk.data.partition(b"\x00")
    if not separator:
        return None
    name = keyword.decode("latin-1")
    try:
        if chunk.type == b"tEXt":
            return name, rest
        if chunk.type == b"zTXt":
            return name, _inflate(rest[1:])
        if chunk.type == b"iTXt":
            compressed = rest[:1] == b"\x01"
            _, _, rest = rest[2:].partition(b"\x00")  # language tag
            _, _, rest = rest.partition(b"\x00")  # translated keyword
            return name, _inflate(rest) if compressed else rest
    except (zlib.error, ContainerError):
        return None
    return None


def raw_profile(text: bytes) -> bytes | None:
    """The bytes of an ImageMagick "Raw profile type ..." text: ``\\nexif\\n   LENGTH\\nHEX...``."""
    parts = text.split(None, 2)
    if len(parts) < 3:
        return None
    try:
        length = int(parts[1])
        value = bytes.fromhex(parts[2].decode("ascii").replace("\n", "").replace(" ", ""))
    except (ValueError, UnicodeDecodeError):
        return None
    return value[:length]


# -- WebP (RIFF) ---------------------------------------------------------------------------------------
VP8X_ICC, VP8X_ALPHA, VP8X_EXIF, VP8X_XMP, VP8X_ANIMATION = 0x20, 0x10, 0x08, 0x04, 0x02


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(FourCC, payload) of each chunk of a WebP file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ContainerError("not a WebP file (no RIFF....WEBP header)")
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    chunks, at = [], 12
    while at + 8 <= end:
        fourcc, size = data[at:at + 4], struct.unpack_from("<I", data, at + 4)[0]
        if at + 8 + size > end:
            raise ContainerError(f"WebP chunk {fourcc!r} at byte {at} runs past the end of the file")
        chunks.append((fourcc, data[at + 8:at + 8 + size]))
        at += 8 + size + size % 2
    return chunks


def build_webp(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """The file for ``chunks``, with the VP8X flags saying which of ICC, EXIF and XMP are present."""
    present = {fourcc for fourcc, _ in chunks}
    fixed = []
    for fourcc, payload in chunks:
        if fourcc == b"VP8X" and len(payload) >= 4:
            flags = payload[0] & ~(VP8X_ICC | VP8X_EXIF | VP8X_XMP)
            flags |= (VP8X_ICC if b"ICCP" in present else 0) | (VP8X_EXIF if b"EXIF" in present else 0) \
                | (VP8X_XMP if b"XMP " in present else 0)
            payload = bytes([flags]) + payload[1:]
        fixed.append(fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2))
    body = b"WEBP" + b"".join(fixed)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sniff(data: bytes) -> str | None:
    """JPEG, PNG, WEBP, TIFF, HEIF or AVIF from a file's first bytes; None for anything else."""
    if data.startswith(JPEG_SOI):
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        box_end = min(len(data), struct.unpack_from(">I", data, 0)[0])
        brands = {data[8:12]} | {data[i:i + 4] for i in range(16, box_end - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
            return "HEIF"
    return None
