"""IPTC-IIM inside Photoshop's image resource blocks (a JPEG's APP13 ``Photoshop 3.0``), read and rebuilt.

A resource block is a list of ``8BIM`` resources (id, Pascal name, size, data padded to even); resource
0x0404 holds the IPTC datasets (``0x1C record dataset length value``). Rebuilding the block keeps every
other resource byte for byte. When the datasets change, the IPTC digest (0x0425, an MD5 of the old
datasets) is dropped as well: left in place it would tell readers that the IPTC was edited by a tool that
did not update it, and some would then ignore the new datasets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"
IPTC_RESOURCE = 0x0404
IPTC_DIGEST = 0x0425
THUMBNAIL_RESOURCES = {0x0409: "Photoshop thumbnail (old)", 0x040C: "Photoshop thumbnail"}
# copies of EXIF and XMP that Photoshop may keep inside the block
EMBEDDED_METADATA = {0x0422: "EXIF copy", 0x0423: "EXIF copy", 0x0424: "XMP copy"}
_SIGNATURES = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")

# record 2 (application) datasets
DATASETS = {
    (2, 5): "ObjectName", (2, 25): "Keywords", (2, 26): "ContentLocationCode", (2, 27): "ContentLocationName",
    (2, 80): "By-line", (2, 85): "By-lineTitle", (2, 90): "City", (2, 92): "Sub-location",
    (2, 95): "Province-State", (2, 100): "Country-PrimaryLocationCode", (2, 101): "Country-PrimaryLocationName",
    (2, 110): "Credit", (2, 115): "Source", (2, 116): "CopyrightNotice", (2, 118): "Contact",
    (2, 120): "Caption-Abstract", (2, 122): "Writer-Editor",
}
LOCATION_DATASETS = {(2, 26), (2, 27), (2, 90), (2, 92), (2, 95), (2, 100), (2, 101)}
OWNER_DATASETS = {(2, 80), (2, 116), (2, 118), (2, 122)}


@dataclass
class Resource:
    signature: bytes
    id: int
    name: bytes
    data: bytes


def parse_resources(block: bytes) -> list[Resource]:
    """The resources of a Photoshop block (the APP13 payload after its header); stops at the first
    damaged one."""
    resources, at = [], 0
    while at + 12 <= len(block) and block[at:at + 4] in _SIGNATURES:
        signature, resource_id = block[at:at + 4], struct.unpack_from(">H", block, at + 4)[0]
        name_length = block[at + 6]
        name_end = at + 7 + name_length
        name_end += (name_end - at - 6) % 2  # the Pascal string (length byte + text) is padded to even
        if name_end + 4 > len(block):
            break
        size = struct.unpack_from(">I", block, name_end)[0]
        data_at = name_end + 4
        if data_at + size > len(block):
            break
        name = block[at + 7:at + 7 + name_length]
        resources.append(Resource(signature, resource_id, name, block[data_at:data_at + size]))
        at = data_at + size + size % 2
    return resources


def build_resources(resources: list[Resource]) -> bytes:
    parts = []
    for resource in resources:
        name = bytes([len(resource.name)]) + resource.name
        name += b"\x00" * (len(name) % 2)
        data = resource.data + b"\x00" * (len(resource.data) % 2)
        parts.append(resource.signature + struct.pack(">H", resource.id) + name + struct.pack(">I", len(resource.data))
                     + data)
    return b"".join(parts)


def parse_datasets(iim: bytes) -> list[tuple[int, int, bytes]]:
    """(record, dataset, value) of each IIM dataset; stops at the first damaged one."""
    datasets, at = [], 0
    while at + 5 <= len(iim) and iim[at] == 0x1C:
        record, number, length = iim[at + 1], iim[at + 2], struct.unpack_from(">H", iim, at + 3)[0]
        at += 5
        if length & 0x8000:  # extended dataset: the low bits say how many bytes hold the length
            width = length & 0x7FFF
            if width > 4 or at + width > len(iim):
                break
            length = int.from_bytes(iim[at:at + width], "big")
            at += width
        if at + length > len(iim):
            break
        datasets.append((record, number, iim[at:at + length]))
        at += length
    return datasets


def build_datasets(datasets: list[tuple[int, int, bytes]]) -> bytes:
    parts = []
    for record, number, value in datasets:
        if len(value) < 0x8000:
            parts.append(bytes([0x1C, record, number]) + struct.pack(">H", len(value)) + value)
        else:
            parts.append(bytes([0x1C, record, number]) + struct.pack(">HI", 0x8004, len(value)) + value)
    return b"".join(parts)


def text(value: bytes) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip()


def dataset_name(record: int, number: int) -> str:
    return DATASETS.get((record, number), f"{record}:{number}")


@dataclass
class IptcContent:
    location: list[str]  # "IPTC: City"
    owners: list[str]  # "IPTC: By-line = Jane"
    thumbnails: list[str]
    embedded: list[str]  # EXIF / XMP copies inside the block


def read_block(block: bytes) -> IptcContent:
    content = IptcContent([], [], [], [])
    for resource in parse_resources(block):
        if resource.id in THUMBNAIL_RESOURCES:
            content.thumbnails.append(THUMBNAIL_RESOURCES[resource.id])
        elif resource.id in EMBEDDED_METADATA:
            content.embedded.append(EMBEDDED_METADATA[resource.id])
        elif resource.id == IPTC_RESOURCE:
            for record, number, value in parse_datasets(resource.data):
                if (record, number) in LOCATION_DATASETS:
                    content.location.append(f"IPTC: {dataset_name(record, number)}")
                elif (record, number) in OWNER_DATASETS:
                    content.owners.append(f"IPTC: {dataset_name(record, number)} = {text(value)}")
    return content


def clean_block(block: bytes, *, location: bool) -> tuple[bytes, list[str]]:
    """The block without thumbnails, and with ``location`` without the IPTC place datasets and the EXIF/XMP
    copies (they may hold GPS); what was removed."""
    removed, kept, iptc_changed = [], [], False
    for resource in parse_resources(block):
        if resource.id in THUMBNAIL_RESOURCES:
            removed.append(THUMBNAIL_RESOURCES[resource.id])
            continue
        if location and resource.id in EMBEDDED_METADATA:
            removed.append(f"Photoshop block {EMBEDDED_METADATA[resource.id]}")
            continue
        if location and resource.id == IPTC_RESOURCE:
            datasets = parse_datasets(resource.data)
            places = [d for d in datasets if (d[0], d[1]) in LOCATION_DATASETS]
            if places:
                removed.extend(f"IPTC {dataset_name(r, n)}" for r, n, _ in places)
                resource = Resource(resource.signature, resource.id, resource.name,
                                    build_datasets([d for d in datasets if (d[0], d[1]) not in LOCATION_DATASETS]))
                iptc_changed = True
        kept.append(resource)
    if iptc_changed:
        kept = [r for r in kept if r.id != IPTC_DIGEST]
    if not removed:
        return block, []
    return build_resources(kept), removed
