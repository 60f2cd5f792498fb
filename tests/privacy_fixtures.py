"""Files with planted private data, and independent readers that look for it afterwards.

Every builder returns ``(file bytes, needles)``: needles are byte strings that occur in the file only
because of a planted location field or thumbnail (a coordinate's packed rationals, a place name, the
thumbnail's own bytes), so a raw byte scan of a cleaned copy must find none of them.

The EXIF blocks are written by :func:`tiff_block`, a TIFF writer of its own (not pixelmine's, not Pillow's),
so the reader under test is not checked against itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
from PIL import Image

EXIFTOOL = "/usr/bin/exiftool"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"

# planted values, each unique enough to be searched for as bytes
LATITUDE = ((48, 1), (51, 1), (2959123, 100000))
LONGITUDE = ((2, 1), (17, 1), (4012345, 100000))
ALTITUDE = ((35291, 100),)
GPS_TIME = ((13, 1), (37, 1), (4211, 100))
GPS_DATE = "2021:06:01"
GPS_METHOD = b"ASCII\x00\x00\x00PLANTED-GPS-METHOD"
XMP_LATITUDE, XMP_LONGITUDE = "48,51.59123N", "2,17.40123E"
XMP_CITY, IPTC_CITY, IPTC_COUNTRY = "Planted-City-Paris", "Planted-City-Lyon", "Planted-Country-France"
SERIAL, LENS_SERIAL, OWNER, ARTIST = "BODY-0420123", "LENS-0777", "Planted Owner Jane", "Planted Artist Joe"
MAKER_NOTE = b"PLANTEDMAKERNOTE" + bytes(range(48))


def photo(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth colour field with an asymmetric mark, so a rotation or flip changes the pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    array = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).copy()
    array[2:8, 2:14] = (255, 0, 0)  # a red bar in the top-left corner of the stored image
    return Image.fromarray(array)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


# -- a TIFF writer -----------------------------------------------------------------------------------
_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}


def _raw(kind: int, value, endian: str) -> tuple[int, bytes]:
    if kind == 2:
        data = value.encode() + b"\x00"
        return len(data), data
    if kind in (1, 7):
        return len(value), bytes(value)
    if kind == 3:
        values = value if isinstance(value, (list, tuple)) else (value,)
        return len(values), struct.pack(f"{endian}{len(values)}H", *values)
    if kind == 4:
        values = value if isinstance(value, (list, tuple)) else (value,)
        return len(values), struct.pack(f"{endian}{len(values)}I", *values)
    if kind == 5:
        return len(value), b"".join(struct.pack(f"{endian}II", n, d) for n, d in value)
    raise ValueError(kind)


def tiff_block(ifds: dict[str, list[tuple[int, int, object]]], *, thumbnail: bytes = b"", endian: str = ">",
               strips: bytes = b"") -> bytes:
    """A TIFF block: ``ifds`` maps "IFD0", "Exif", "GPS", "IFD1" to (tag, type, value) entries; the
    pointers (0x8769, 0x8825, IFD1's next-IFD link, 0x0201/0x0202 for ``thumbnail``, IFD0's StripOffsets
    for ``strips``: the pixel data of a TIFF file) are filled in."""
    order = [name for name in ("IFD0", "Exif", "GPS", "IFD1") if name in ifds]
    entries = {name: list(ifds[name]) for name in order}
    if "Exif" in entries:
        entries["IFD0"].append((0x8769, 4, 0))
    if "GPS" in entries:
        entries["IFD0"].append((0x8825, 4, 0))
    if "IFD1" in entries and thumbnail:
        entries["IFD1"] += [(0x0201, 4, 0), (0x0202, 4, len(thumbnail))]
    for name in order:
        entries[name].sort(key=lambda e: e[0])

    def size(name):
        extra = 0
        for _, kind, value in entries[name]:
            _, data = _raw(kind, value, endian)
            if len(data) > 4:
                extra += len(data) + len(data) % 2
        return 2 + 12 * len(entries[name]) + 4 + extra

    offsets, at = {}, 8
    for name in order:
        offsets[name] = at
        at += size(name)
    thumbnail_at = at
    pointers = {("IFD0", 0x8769): offsets.get("Exif"), ("IFD0", 0x8825): offsets.get("GPS"),
                ("IFD1", 0x0201): thumbnail_at}
    if strips:
        pointers["IFD0", 0x0111] = thumbnail_at + len(thumbnail)
    pointers = {key: value for key, value in pointers.items() if value is not None}
    out = bytearray(b"MM\x00*" if endian == ">" else b"II*\x00") + struct.pack(endian + "I", 8)
    for name in order:
        values_at = offsets[name] + 2 + 12 * len(entries[name]) + 4
        head, tail = bytearray(struct.pack(endian + "H", len(entries[name]))), bytearray()
        for tag, kind, value in entries[name]:
            if (name, tag) in pointers:
                value = pointers[name, tag]
            count, data = _raw(kind, value, endian)
            if len(data) <= 4:
                head += struct.pack(endian + "HHI", tag, kind, count)[:8] + data.ljust(4, b"\x00")
            else:
                head += struct.pack(endian + "HHII", tag, kind, count, values_at + len(tail))
                tail += data + b"\x00" * (len(data) % 2)
        next_ifd = offsets["IFD1"] if name == "IFD0" and "IFD1" in offsets else 0
        head += struct.pack(endian + "I", next_ifd)
        out += head + tail
    return bytes(out) + thumbnail + strips


def gps_entries() -> list[tuple[int, int, object]]:
    return [(0, 1, bytes([2, 3, 0, 0])), (1, 2, "N"), (2, 5, LATITUDE), (3, 2, "E"), (4, 5, LONGITUDE),
            (5, 1, b"\x00"), (6, 5, ALTITUDE), (7, 5, GPS_TIME), (18, 2, "WGS-84"), (27, 7, GPS_METHOD),
            (29, 2, GPS_DATE)]


def full_exif(orientation: int = 6, *, thumbnail: bytes | None = None, endian: str = ">") -> bytes:
    """EXIF with every planted field: GPS IFD, serials, owner, artist, maker note and an IFD1 thumbnail."""
    ifds = {
        "IFD0": [(0x010F, 2, "PlantedMake"), (0x0110, 2, "PlantedModel X1"), (0x0112, 3, orientation),
                 (0x0132, 2, "2021:06:02 08:00:00"), (0x013B, 2, ARTIST), (0x8298, 2, "(c) Planted Copyright")],
        "Exif": [(0x9003, 2, "2021:06:01 13:37:42"), (0x927C, 7, MAKER_NOTE), (0xA430, 2, OWNER),
                 (0xA431, 2, SERIAL), (0xA435, 2, LENS_SERIAL)],
        "GPS": gps_entries(),
    }
    if thumbnail is not None:
        ifds["IFD1"] = [(0x0103, 3, 6), (0x011A, 5, ((72, 1),)), (0x011B, 5, ((72, 1),)), (0x0128, 3, 2)]
    return tiff_block(ifds, thumbnail=thumbnail or b"", endian=endian)


def thumbnail_jpeg() -> bytes:
    return encoded(photo(99, (16, 12)), "JPEG", quality=70)


def xmp_packet(*, orientation: int | None = None) -> bytes:
    orientation_attribute = f' tiff:Orientation="{orientation}"' if orientation else ""
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:aux="http://ns.adobe.com/exif/1.0/aux/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    exif:GPSLatitude="{XMP_LATITUDE}" tiff:Make="PlantedMake"{orientation_attribute}
    aux:SerialNumber="{SERIAL}">
   <exif:GPSLongitude>{XMP_LONGITUDE}</exif:GPSLongitude>
   <photoshop:City>{XMP_CITY}</photoshop:City>
   <Iptc4xmpExt:LocationCreated>
    <rdf:Bag><rdf:li rdf:parseType="Resource">
     <Iptc4xmpExt:Sublocation>Planted-Sublocation</Iptc4xmpExt:Sublocation>
    </rdf:li></rdf:Bag>
   </Iptc4xmpExt:LocationCreated>
   <dc:creator><rdf:Seq><rdf:li>{ARTIST}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">a kept description</rdf:li></rdf:Alt></dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode("utf-8")


PHOTOSHOP_THUMBNAIL = b"PLANTED-PHOTOSHOP-THUMBNAIL" * 4


def iptc_block() -> bytes:
    """APP13 payload: Photoshop 3.0 header, an IPTC resource (City, Country, By-line, Caption) and a
    Photoshop thumbnail resource."""
    def dataset(number, text):
        data = text.encode()
        return bytes([0x1C, 2, number]) + struct.pack(">H", len(data)) + data

    iim = dataset(90, IPTC_CITY) + dataset(101, IPTC_COUNTRY) + dataset(80, ARTIST) + dataset(120, "kept caption")

    def resource(resource_id, data):
        return b"8BIM" + struct.pack(">H", resource_id) + b"\x00\x00" + struct.pack(">I", len(data)) + data + \
            b"\x00" * (len(data) % 2)

    return b"Photoshop 3.0\x00" + resource(0x0404, iim) + resource(0x040C, PHOTOSHOP_THUMBNAIL)


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


JFIF_THUMBNAIL = bytes(range(100, 112))  # 2x2 RGB


def planted_jpeg(orientation: int = 6, *, trailer: bool = True) -> tuple[bytes, dict[str, bytes]]:
    """A JPEG with every location field (EXIF GPS IFD, XMP GPS + City + LocationCreated, IPTC City and
    Country), every kind of thumbnail (EXIF IFD1, JFIF, Photoshop, a preview JPEG with its own GPS after
    EOI), serials, owner, artist, maker note; EXIF orientation ``orientation``."""
    base = encoded(photo(1), "JPEG", quality=90)
    assert base[2:4] == b"\xff\xe0"
    after_app0 = 4 + struct.unpack(">H", base[4:6])[0]
    thumb = thumbnail_jpeg()
    jfif = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x02\x02" + JFIF_THUMBNAIL)
    exif_segment = segment(0xE1, b"Exif\x00\x00" + full_exif(orientation, thumbnail=thumb))
    data = (b"\xff\xd8" + jfif + exif_segment + segment(0xE1, XMP_HEADER + xmp_packet())
            + segment(0xED, iptc_block()) + segment(0xFE, b"a kept comment") + base[after_app0:])
    needles = location_needles() | {"EXIF thumbnail": thumb[2:200], "JFIF thumbnail": JFIF_THUMBNAIL,
                                    "Photoshop thumbnail": PHOTOSHOP_THUMBNAIL}
    if trailer:
        preview = (b"\xff\xd8" + segment(0xE1, b"Exif\x00\x00" + tiff_block({"IFD0": [(0x0112, 3, 1)],
                                                                             "GPS": gps_entries()}))
                   + thumb[2:])
        data += b"\x00" * 4 + preview
        needles["trailer preview"] = preview[:64]
    return data, needles


def location_needles() -> dict[str, bytes]:
    def rationals(values):
        return b"".join(struct.pack(">II", n, d) for n, d in values)

    return {"GPSLatitude": rationals(LATITUDE), "GPSLongitude": rationals(LONGITUDE),
            "GPSAltitude": rationals(ALTITUDE), "GPSTimeStamp": rationals(GPS_TIME),
            "GPSProcessingMethod": GPS_METHOD, "GPSDateStamp": GPS_DATE.encode() + b"\x00",
            "XMP GPSLatitude": XMP_LATITUDE.encode(), "XMP GPSLongitude": XMP_LONGITUDE.encode(),
            "XMP City": XMP_CITY.encode(), "XMP Sublocation": b"Planted-Sublocation",
            "IPTC City": IPTC_CITY.encode(), "IPTC Country": IPTC_COUNTRY.encode()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def planted_png(orientation: int = 1) -> tuple[bytes, dict[str, bytes]]:
    """A PNG with an eXIf chunk (GPS, IFD1 thumbnail, serials), an XMP iTXt, a compressed XMP copy in an
    ImageMagick "Raw profile type xmp" zTXt, and an Author tEXt."""
    thumb = thumbnail_jpeg()
    base = encoded(photo(2), "PNG")
    at_idat = base.index(b"IDAT") - 4
    xmp_text = xmp_packet()
    raw_xmp = b"\nxmp\n" + str(len(xmp_text)).rjust(8).encode() + b"\n" + xmp_text.hex().encode() + b"\n"
    extra = (_png_chunk(b"eXIf", full_exif(orientation, thumbnail=thumb, endian="<"))
             + _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp_text)
             + _png_chunk(b"zTXt", b"Raw profile type xmp\x00\x00" + zlib.compress(raw_xmp))
             + _png_chunk(b"tEXt", b"Author\x00" + OWNER.encode())
             + _png_chunk(b"tEXt", b"Comment\x00a kept comment"))
    needles = {k: v for k, v in location_needles().items() if not k.startswith("IPTC")}
    needles = {k: (_little(v) if k.startswith("GPS") and k not in ("GPSProcessingMethod", "GPSDateStamp") else v)
               for k, v in needles.items()}
    needles["EXIF thumbnail"] = thumb[2:200]
    return base[:at_idat] + extra + base[at_idat:], needles


def _little(big_endian_rationals: bytes) -> bytes:
    values = struct.unpack(f">{len(big_endian_rationals) // 4}I", big_endian_rationals)
    return struct.pack(f"<{len(values)}I", *values)


def _riff_with_exif_header(data: bytes) -> bytes:
    chunks, at = [], 12
    while at + 8 <= len(data):
        fourcc, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        payload = data[at + 8:at + 8 + size]
        if fourcc == b"EXIF" and not payload.startswith(b"Exif"):
            payload = b"Exif\x00\x00" + payload
        chunks.append(fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2))
        at += 8 + size + size % 2
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def planted_webp(orientation: int = 1, *, lossless: bool = True, exif_header: bool = False
                 ) -> tuple[bytes, dict[str, bytes]]:
    thumb = thumbnail_jpeg()
    image = photo(3).convert("RGBA")
    data = encoded(image, "WEBP", lossless=lossless, quality=90,
                   exif=b"Exif\x00\x00" + full_exif(orientation, thumbnail=thumb), xmp=xmp_packet())
    if exif_header:  # the spec's EXIF chunk has no "Exif\0\0"; many writers (and exifread) expect one
        data = _riff_with_exif_header(data)
    needles = {k: v for k, v in location_needles().items() if not k.startswith("IPTC")}
    needles["EXIF thumbnail"] = thumb[2:200]
    return data, needles


def planted_heic(orientation: int = 1) -> tuple[bytes, dict[str, bytes]]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    thumb = thumbnail_jpeg()
    data = encoded(photo(4), "HEIF", quality=90, exif=b"Exif\x00\x00" + full_exif(orientation, thumbnail=thumb),
                   xmp=xmp_packet())
    needles = {k: v for k, v in location_needles().items() if not k.startswith("IPTC")}
    needles["EXIF thumbnail"] = thumb[2:200]
    return data, needles


def planted_tiff(orientation: int = 8) -> tuple[bytes, dict[str, bytes]]:
    """An uncompressed RGB TIFF whose IFD0 carries the planted camera, owner and GPS fields."""
    image = photo(5)
    pixels = image.tobytes()
    width, height = image.size
    ifd0 = [(0x0100, 3, width), (0x0101, 3, height), (0x0102, 3, (8, 8, 8)), (0x0103, 3, 1), (0x0106, 3, 2),
            (0x0111, 4, 0), (0x0112, 3, orientation), (0x0115, 3, 3), (0x0116, 3, height),
            (0x0117, 4, len(pixels)), (0x010F, 2, "PlantedMake"), (0x013B, 2, ARTIST)]
    data = tiff_block({"IFD0": ifd0, "Exif": [(0xA431, 2, SERIAL)], "GPS": gps_entries()}, strips=pixels)
    needles = {k: v for k, v in location_needles().items() if k.startswith("GPS")}
    return data, needles


def fixture_set() -> dict[str, tuple[bytes, dict[str, bytes]]]:
    """Every fixture the benchmark and the tests share, by name."""
    fixtures = {
        "jpeg-gps-xmp-iptc-ifd1-orient6": planted_jpeg(6),
        "jpeg-orient1-no-trailer": planted_jpeg(1, trailer=False),
        "png-exif-xmp": planted_png(1),
        "png-exif-orient6": planted_png(6),
        "webp-lossless-exif-xmp": planted_webp(1, exif_header=True),
        "webp-lossy-orient6": planted_webp(6, lossless=False),
        "tiff-gps": planted_tiff(),
    }
    try:
        fixtures["heic-exif-gps-xmp"] = planted_heic(1)
    except (ImportError, OSError, ValueError):  # pillow-heif without an HEVC encoder
        pass
    return fixtures


# -- independent readers -------------------------------------------------------------------------------
def exifread_report(data: bytes) -> dict[str, list[str]]:
    """exifread's view: {'location': GPS tags, 'thumbnails': thumbnail tags, 'tags': all}."""
    import exifread

    logging.getLogger("exifread").setLevel(logging.ERROR)  # "file does not have exif data" is our answer, not news
    try:
        tags = exifread.process_file(io.BytesIO(data), details=True, extract_thumbnail=True)
    except Exception as exc:  # noqa: BLE001 - exifread asserts on container layouts it does not know
        return {"location": [], "thumbnails": [], "tags": [], "error": f"{type(exc).__name__}: {exc}"}
    names = sorted(tags)
    return {"location": [n for n in names if n.startswith("GPS ")],
            "thumbnails": [n for n in names if n.startswith("Thumbnail ") or n == "JPEGThumbnail"],
            "tags": names}


def have_exiftool() -> bool:
    return os.path.exists(EXIFTOOL) and shutil.which(EXIFTOOL) is not None


_EXIFTOOL_LOCATION = ("GPS", "City", "Country", "Location", "Sublocation", "Province", "State", "Latitude",
                      "Longitude")
_EXIFTOOL_THUMBNAIL = ("Thumbnail", "PreviewImage", "MPImage", "PhotoshopThumbnail")


def exiftool_report(data: bytes, tmp_dir) -> dict[str, list[str]]:
    """exiftool's view (``-j -G -a -u``): keys like 'EXIF:GPSLatitude', 'XMP:City', 'IPTC:City'."""
    path = os.path.join(str(tmp_dir), "exiftool-probe.bin")
    with open(path, "wb") as out:
        out.write(data)
    done = subprocess.run([EXIFTOOL, "-j", "-G", "-a", "-u", "-ee", path], capture_output=True, text=True,
                          timeout=60)
    payload = json.loads(done.stdout)[0]
    keys = sorted(k for k in payload if k not in ("SourceFile",) and not k.startswith(("File:", "System:",
                                                                                       "ExifTool:")))
    return {"location": [k for k in keys if any(word in k.split(":", 1)[-1] for word in _EXIFTOOL_LOCATION)],
            "thumbnails": [k for k in keys if any(word in k for word in _EXIFTOOL_THUMBNAIL)],
            "tags": keys}


def raw_hits(data: bytes, needles: dict[str, bytes]) -> list[str]:
    """Names of the needles still present in the bytes (also hex-encoded, as ImageMagick stores profiles)."""
    return [name for name, needle in needles.items() if needle in data or needle.hex().encode() in data]


def jpeg_scan(data: bytes) -> bytes:
    """The bytes from the first SOS marker to the end of the primary image's EOI (pixel data)."""
    at = 2
    while data[at + 1] != 0xDA:
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    end = data.find(b"\xff\xd9", at)  # baseline entropy data never holds 0xFFD9: the first one is EOI
    return data[at:end + 2]
