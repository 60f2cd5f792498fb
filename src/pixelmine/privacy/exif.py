"""EXIF as it is stored: a small TIFF structure (header, IFD0 -> Exif, GPS and Interop IFDs, IFD1), read
and edited in place.

Why in place rather than "parse, drop tags, serialise": a maker note is an opaque blob whose inner offsets
often count from the TIFF header, so any writer that moves it breaks it (and with it the lens and shutter
data that people keep metadata for). Removing the GPS IFD or the IFD1 thumbnail in place touches only the
bytes that belong to them: their entries are taken out of their parent IFD (the entries after them move up
by 12 bytes, inside the IFD's own space), their data is overwritten with zeros, and zeros left at the very
end of the block are cut off. Every other offset stays valid. The result is parsed again and checked before
it is used (a second reader, because Pillow once kept GPS data after "deleting" the GPS IFD).

Everything here is plain bytes; nothing is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

EXIF_HEADER = b"Exif\x00\x00"
# bytes per value of each TIFF field type (1 BYTE .. 13 IFD; 16-18 are BigTIFF's 8-byte types)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
              16: 8, 17: 8, 18: 8}
MAX_ENTRIES = 2000  # per IFD; real files have < 100, a larger count means a broken or hostile file
MAX_IFDS = 32  # IFDs followed per block, so that a loop of pointers ends

ORIENTATION = 0x0112
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
THUMBNAIL_OFFSET, THUMBNAIL_LENGTH = 0x0201, 0x0202
STRIP_OFFSETS, STRIP_BYTE_COUNTS, TILE_OFFSETS, TILE_BYTE_COUNTS = 0x0111, 0x0117, 0x0144, 0x0145
NEW_SUBFILE_TYPE = 0x00FE
SUB_IFDS = 0x014A
POINTERS = {EXIF_IFD: "Exif", GPS_IFD: "GPS", INTEROP_IFD: "Interop"}

GPS_TAGS = {
    0: "GPSVersionID", 1: "GPSLatitudeRef", 2: "GPSLatitude", 3: "GPSLongitudeRef", 4: "GPSLongitude",
    5: "GPSAltitudeRef", 6: "GPSAltitude", 7: "GPSTimeStamp", 8: "GPSSatellites", 9: "GPSStatus",
    10: "GPSMeasureMode", 11: "GPSDOP", 12: "GPSSpeedRef", 13: "GPSSpeed", 14: "GPSTrackRef", 15: "GPSTrack",
    16: "GPSImgDirectionRef", 17: "GPSImgDirection", 18: "GPSMapDatum", 19: "GPSDestLatitudeRef",
    20: "GPSDestLatitude", 21: "GPSDestLongitudeRef", 22: "GPSDestLongitude", 23: "GPSDestBearingRef",
    24: "GPSDestBearing", 25: "GPSDestDistanceRef", 26: "GPSDestDistance", 27: "GPSProcessingMethod",
    28: "GPSAreaInformation", 29: "GPSDateStamp", 30: "GPSDifferential", 31: "GPSHPositioningError",
}
# tags that name a device: EXIF 2.3's serials, DNG's CameraSerialNumber, Photoshop's camera-raw SerialNumber
SERIAL_TAGS = {0xA431: "BodySerialNumber", 0xA435: "LensSerialNumber", 0xC62F: "CameraSerialNumber",
               0xFDE9: "SerialNumber"}
# tags that name a person
OWNER_TAGS = {0xA430: "CameraOwnerName", 0x013B: "Artist", 0x8298: "Copyright", 0x9C9D: "XPAuthor",
              0xFDE8: "OwnerName"}


class ExifError(ValueError):
    """The bytes are not a TIFF structure this module can read."""


@dataclass
class Entry:
    tag: int
    type: int
    count: int
    at: int  # offset of the 12-byte entry in the block
    value_at: int  # offset of the value: inside the entry when it fits in 4 bytes, else where it points
    size: int  # bytes of the value; 0 for a type this module does not know

    @property
    def out_of_line(self) -> bool:
        return self.size > 4


@dataclass
class Ifd:
    name: str  # IFD0, Exif, GPS, Interop, IFD1 (then IFD2, ...)
    at: int  # offset of the entry count
    entries: list[Entry] = field(default_factory=list)

    @property
    def end(self) -> int:
        """Offset just after the next-IFD pointer."""
        return self.at + 2 + 12 * len(self.entries) + 4

    def find(self, tag: int) -> Entry | None:
        return next((entry for entry in self.entries if entry.tag == tag), None)


class Tiff:
    """The IFDs of a TIFF block (an EXIF payload without its ``Exif\\0\\0`` header, or a whole TIFF file).

    ``ifds`` holds IFD0 and the IFDs reached from it (Exif, GPS, Interop) and the chain after it (IFD1,
    IFD2, ...). Entries whose value lies outside the block are kept with ``size`` 0 so that they can still
    be removed; ``problems`` says what was odd.
    """

    def __init__(self, data: bytes):
        if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
            raise ExifError("not a TIFF header (II*\\0 or MM\\0*)")
        self.data = bytes(data)
        self.endian = "<" if data[:2] == b"II" else ">"
        self.ifds: dict[str, Ifd] = {}
        self.parents: dict[str, tuple[str, int]] = {}  # sub-IFD name -> (parent IFD name, pointer tag)
        self.problems: list[str] = []
        self._seen: set[int] = set()
        first = self._u32(4)
        chain_at, index = first, 0
        while chain_at and index < MAX_IFDS:
            name = f"IFD{index}"
            ifd = self._read_ifd(name, chain_at)
            if ifd is None:
                break
            if index == 0:
                self._follow_pointers(ifd)
            chain_at = self._u32(ifd.end - 4)
            index += 1

    # -- reading -------------------------------------------------------------------------------------
    def _u16(self, at: int) -> int:
        return struct.unpack_from(self.endian + "H", self.data, at)[0]

    def _u32(self, at: int) -> int:
        return struct.unpack_from(self.endian + "I", self.data, at)[0]

    def _read_ifd(self, name: str, at: int) -> Ifd | None:
        if at in self._seen or at < 8 or at + 2 > len(self.data):
            if at not in self._seen:
                self.problems.append(f"{name} offset {at} is outside the block")
            return None
        self._seen.add(at)
        count = self._u16(at)
        if count > MAX_ENTRIES or at + 2 + 12 * count + 4 > len(self.data):
            self.problems.append(f"{name} at {at} declares {count} entries, more than the block holds")
            return None
        ifd = Ifd(name, at)
        for index in range(count):
            entry_at = at + 2 + 12 * index
            tag, kind, n = struct.unpack_from(self.endian + "HHI", self.data, entry_at)
            size = TYPE_SIZES.get(kind, 0) * n
            value_at = entry_at + 8 if size <= 4 else self._u32(entry_at + 8)
            if size > 4 and value_at + size > len(self.data):
                self.problems.append(f"{name} tag 0x{tag:04X}: value outside the block")
                size = 0
            ifd.entries.append(Entry(tag, kind, n, entry_at, value_at, size))
        self.ifds[name] = ifd
        return ifd

    def _follow_pointers(self, parent: Ifd) -> None:
        for entry in parent.entries:
            name = POINTERS.get(entry.tag)
            if name is None or name in self.ifds or entry.type not in (4, 13) or entry.count != 1:
                continue
            child = self._read_ifd(name, self._u32(entry.value_at))
            if child is not None:
                self.parents[name] = (parent.name, entry.tag)
                self._follow_pointers(child)  # Interop hangs off Exif; a GPS pointer sometimes does too

    def value(self, entry: Entry):
        """The entry's value: str for ASCII, bytes for BYTE/UNDEFINED, int (or a tuple) for integers,
        float (or a tuple) for rationals and floats; None when it cannot be read."""
        if entry.size == 0 and entry.count:
            return None
        raw = self.data[entry.value_at:entry.value_at + entry.size]
        kind, e = entry.type, self.endian
        if kind == 2:
            return raw.split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
        if kind in (1, 6, 7):
            return raw
        formats = {3: "H", 4: "I", 8: "h", 9: "i", 11: "f", 12: "d", 13: "I", 16: "Q", 17: "q", 18: "Q"}
        if kind in formats:
            values = struct.unpack(f"{e}{entry.count}{formats[kind]}", raw)
        elif kind in (5, 10):
            pairs = struct.unpack(f"{e}{2 * entry.count}{'I' if kind == 5 else 'i'}", raw)
            values = tuple(num / den if den else float("nan") for num, den in zip(pairs[::2], pairs[1::2]))
        else:
            return None
        return values[0] if len(values) == 1 else values

    def tag_value(self, ifd: str, tag: int):
        block = self.ifds.get(ifd)
        entry = block.find(tag) if block else None
        return self.value(entry) if entry else None

    def thumbnail_span(self) -> tuple[int, int] | None:
        """(offset, length) of IFD1's JPEG thumbnail in the block, when it has one."""
        ifd1 = self.ifds.get("IFD1")
        if ifd1 is None:
            return None
        offset, length = self.tag_value("IFD1", THUMBNAIL_OFFSET), self.tag_value("IFD1", THUMBNAIL_LENGTH)
        if isinstance(offset, int) and isinstance(length, int) and length > 0:
            return offset, min(length, max(0, len(self.data) - offset))
        return None

    def has_thumbnail(self) -> bool:
        """IFD1 with a JPEG thumbnail or strips (an uncompressed one)."""
        ifd1 = self.ifds.get("IFD1")
        return ifd1 is not None and (ifd1.find(THUMBNAIL_OFFSET) is not None or ifd1.find(STRIP_OFFSETS) is not None)

    def extent(self) -> int:
        """Offset just after the last byte that any IFD or value still refers to."""
        end = 8
        for ifd in self.ifds.values():
            end = max(end, ifd.end)
            for entry in ifd.entries:
                if entry.out_of_line:
                    end = max(end, entry.value_at + entry.size)
        return end


# -- editing -------------------------------------------------------------------------------------------
def split_header(payload: bytes) -> tuple[bytes, bytes]:
    """(``Exif\\0\\0`` or b"", the TIFF block) of an EXIF payload as JPEG, WebP, PNG and HEIF store it."""
    if payload[:4] == b"Exif" and payload[6:8] in (b"II", b"MM"):
        return payload[:6], payload[6:]
    return b"", payload


def _blank(buffer: bytearray, start: int, length: int) -> None:
    end = min(len(buffer), start + max(0, length))
    if start < end:
        buffer[start:end] = bytes(end - start)


def _blank_ifd(buffer: bytearray, tiff: Tiff, ifd: Ifd) -> None:
    """Zero an IFD's own bytes and every value it points to."""
    for entry in ifd.entries:
        if entry.out_of_line:
            _blank(buffer, entry.value_at, entry.size)
    _blank(buffer, ifd.at, ifd.end - ifd.at)


def _drop_entry(buffer: bytearray, tiff: Tiff, ifd: Ifd, tag: int) -> None:
    """Take one entry out of an IFD: the later entries and the next-IFD pointer move up 12 bytes."""
    entry = ifd.find(tag)
    if entry is None:
        return
    tail_start, tail_end = entry.at + 12, ifd.end
    buffer[entry.at:tail_end - 12] = buffer[tail_start:tail_end]
    _blank(buffer, tail_end - 12, 12)
    struct.pack_into(tiff.endian + "H", buffer, ifd.at, len(ifd.entries) - 1)


def _set_next(buffer: bytearray, tiff: Tiff, ifd: Ifd, offset: int) -> None:
    struct.pack_into(tiff.endian + "I", buffer, ifd.end - 4, offset)


def clean_tiff(block: bytes, *, gps: bool = True, thumbnail: bool = True) -> tuple[bytes, list[str]]:
    """The block without its GPS IFD (``gps``) and without IFD1 and the thumbnail it points to
    (``thumbnail``), edited in place; and what was removed. Raises ExifError when the block cannot be read
    or the edit cannot be verified (the caller then drops the whole EXIF)."""
    tiff = Tiff(block)
    buffer = bytearray(tiff.data)
    removed: list[str] = []
    if gps and "GPS" in tiff.ifds:
        gps_ifd = tiff.ifds["GPS"]
        names = [GPS_TAGS.get(e.tag, f"0x{e.tag:04X}") for e in gps_ifd.entries]
        _blank_ifd(buffer, tiff, gps_ifd)
        parent_name, tag = tiff.parents["GPS"]
        _drop_entry(buffer, tiff, tiff.ifds[parent_name], tag)
        removed.append("EXIF GPS IFD (" + (", ".join(names) or "empty") + ")")
        tiff = Tiff(bytes(buffer))
    elif gps and any(ifd.find(GPS_IFD) for ifd in tiff.ifds.values()):  # a pointer to nothing readable
        for ifd in list(tiff.ifds.values()):
            if ifd.find(GPS_IFD) is not None:
                _drop_entry(buffer, tiff, ifd, GPS_IFD)
                tiff = Tiff(bytes(buffer))
        removed.append("EXIF GPS pointer (its IFD was unreadable)")
    if thumbnail and "IFD1" in tiff.ifds:
        span = tiff.thumbnail_span()
        if span is not None:
            _blank(buffer, *span)
        strips, counts = tiff.tag_value("IFD1", STRIP_OFFSETS), tiff.tag_value("IFD1", STRIP_BYTE_COUNTS)
        if strips is not None and counts is not None:
            for offset, length in zip(_as_tuple(strips), _as_tuple(counts)):
                _blank(buffer, offset, length)
        for name in [n for n in tiff.ifds if n.startswith("IFD") and n != "IFD0"]:
            _blank_ifd(buffer, tiff, tiff.ifds[name])
        _set_next(buffer, tiff, tiff.ifds["IFD0"], 0)
        removed.append("EXIF IFD1 thumbnail" + (f" ({span[1]} bytes)" if span else "")
                       if tiff.has_thumbnail() else "EXIF IFD1")
    if not removed:
        return block, []
    extent = Tiff(bytes(buffer)).extent()
    end = len(buffer)
    while end > extent and buffer[end - 1] == 0:
        end -= 1
    result = bytes(buffer[:end])
    check = Tiff(result)
    if (gps and ("GPS" in check.ifds or any(i.find(GPS_IFD) for i in check.ifds.values()))) or \
            (thumbnail and "IFD1" in check.ifds):
        raise ExifError("the GPS IFD or IFD1 was still there after the edit")
    return result, removed


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def set_orientation(block: bytes, orientation: int = 1) -> bytes:
    """The block with IFD0's Orientation set to ``orientation`` (in place; unchanged when it has none)."""
    try:
        tiff = Tiff(block)
    except ExifError:
        return block
    entry = tiff.ifds.get("IFD0", Ifd("IFD0", 0)).find(ORIENTATION)
    if entry is None or entry.type != 3 or entry.count != 1:
        return block
    buffer = bytearray(block)
    struct.pack_into(tiff.endian + "H", buffer, entry.value_at, orientation)
    return bytes(buffer)


def orientation_only(orientation: int) -> bytes:
    """A TIFF block holding IFD0 with one entry, Orientation (what a JPEG needs to be shown upright)."""
    return (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", ORIENTATION, 3, 1, orientation, 0) + struct.pack(">I", 0))


def orientation_of(block: bytes) -> int | None:
    try:
        value = Tiff(block).tag_value("IFD0", ORIENTATION)
    except ExifError:
        return None
    return value if isinstance(value, int) else None
