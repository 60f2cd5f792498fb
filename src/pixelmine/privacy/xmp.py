"""XMP packets read and edited as text, by property name.

XMP writes one property in two interchangeable forms, and writers mix them freely::

    <rdf:Description exif:GPSLatitude="48,51.5N" .../>                       attribute form
    <exif:GPSLatitude>48,51.5N</exif:GPSLatitude>                             element form
    <Iptc4xmpExt:LocationCreated><rdf:Bag><rdf:li ...>...</rdf:li></rdf:Bag>  a structure (element form)

so properties are found by a regular expression on qualified names in both forms, not by a schema. A
removal cuts out the outermost matching element (with everything inside it) or the attribute, and the
result must still parse as XML when the original did; otherwise the caller drops the whole packet.
Prefixes are matched by their conventional spelling (``exif:``, ``photoshop:``, ...), which is what every
writer in practice uses.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ElementTree

_NAME = r"[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*"
_TAG = re.compile(r"<(/?)(" + _NAME + r")((?:\s+[^<>]*?)?)\s*(/?)>", re.S)
_ATTRIBUTE = re.compile(r"\s+(" + _NAME + r")\s*=\s*(\"[^\"]*\"|'[^']*')", re.S)
_STRUCTURE_PREFIXES = ("rdf", "x", "xmlns", "xml")  # the packet's skeleton, never a property

# Location: any GPS-like property (exif:GPS*, drone-dji:GpsLatitude, ...) and IPTC's place names
_ANY_LOCATION = re.compile(r"^(?:gps\w*|\w*latitude|\w*longitude|\w*longtitude|absolutealtitude|relativealtitude)$",
                           re.I)
_PLACE_PREFIXES = {"photoshop", "iptc4xmpcore", "iptc4xmpext", "iptcext"}
_PLACE_NAMES = {"city", "state", "country", "countrycode", "countryname", "location", "locationcreated",
                "locationshown", "sublocation", "provincestate", "provincecode", "worldregion", "locationid",
                "locationname"}
_SERIAL_NAMES = {"serialnumber", "bodyserialnumber", "lensserialnumber", "cameraserialnumber",
                 "internalserialnumber"}
_OWNER_NAMES = {"dc:creator", "dc:rights", "xmprights:owner", "aux:ownername", "exifex:cameraownername",
                "iptc4xmpcore:creatorcontactinfo", "tiff:artist", "photoshop:authorsposition"}
_ORIENTATION = re.compile(r"(tiff:Orientation\s*=\s*[\"']|<tiff:Orientation>\s*)(\d)")


def is_location(name: str) -> bool:
    prefix, _, local = name.partition(":")
    return bool(_ANY_LOCATION.match(local)) or (prefix.lower() in _PLACE_PREFIXES and local.lower() in _PLACE_NAMES)


def is_serial(name: str) -> bool:
    return name.partition(":")[2].lower() in _SERIAL_NAMES


def is_owner(name: str) -> bool:
    return name.lower() in _OWNER_NAMES


def is_thumbnail(name: str) -> bool:
    """xmp:Thumbnails: base64 JPEG previews (of the unedited original, like EXIF's IFD1)."""
    prefix, _, local = name.partition(":")
    return local == "Thumbnails" and prefix.lower() in ("xmp", "xap")


def decode(payload: bytes) -> str:
    """The packet as text (XMP is UTF-8 in practice; UTF-16 packets announce themselves with a BOM)."""
    if payload[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return payload.decode("utf-16", "replace")
    return payload.decode("utf-8", "replace")


def _is_property(name: str) -> bool:
    return name.partition(":")[0].lower() not in _STRUCTURE_PREFIXES


def _text(fragment: str) -> str:
    """The text inside an element: tags dropped, entities decoded, list items joined by "; "."""
    items = [html.unescape(part).strip() for part in re.split(r"<[^<>]*>", fragment)]
    return "; ".join(item for item in items if item)


def _scan(text: str, wanted) -> tuple[list[tuple[int, int, str, str]], list[tuple[int, int, str, str]]]:
    """(outermost wanted elements, wanted attributes outside them): (start, end, name, value) each."""
    elements, attributes = [], []
    depth, open_removal = 0, None  # (depth at which it opened, start, name, start of its content)
    for tag in _TAG.finditer(text):
        closing, name, attrs, self_closing = tag.group(1), tag.group(2), tag.group(3), tag.group(4)
        if closing:
            depth -= 1
            if open_removal and depth == open_removal[0] and name == open_removal[2]:
                elements.append((open_removal[1], tag.end(), name, _text(text[open_removal[3]:tag.start()])))
                open_removal = None
            continue
        if open_removal is None:
            if _is_property(name) and wanted(name):
                if self_closing:
                    values = [html.unescape(m.group(2)[1:-1]) for m in _ATTRIBUTE.finditer(attrs)]
                    elements.append((tag.start(), tag.end(), name, "; ".join(v for v in values if v)))
                else:
                    open_removal = (depth, tag.start(), name, tag.end())
            else:
                offset = tag.start(3)
                for attribute in _ATTRIBUTE.finditer(attrs):
                    attribute_name = attribute.group(1)
                    if _is_property(attribute_name) and wanted(attribute_name):
                        attributes.append((offset + attribute.start(), offset + attribute.end(), attribute_name,
                                           html.unescape(attribute.group(2)[1:-1])))
        if not self_closing:
            depth += 1
    if open_removal is not None:  # never closed (a damaged packet): it runs to the end
        elements.append((open_removal[1], len(text), open_removal[2], _text(text[open_removal[3]:])))
    return elements, attributes


def properties(text: str, wanted=lambda name: True) -> list[tuple[str, str]]:
    """(qualified name, value as text) of every property ``wanted(name)`` accepts, in both forms; the
    properties inside a structure that is listed are not listed again."""
    elements, attributes = _scan(text, wanted)
    return [(name, value) for _, _, name, value in sorted(elements + attributes)]


def _well_formed(text: str) -> bool:
    try:
        ElementTree.fromstring(text.strip().lstrip("\ufeff").encode("utf-8"))
    except ElementTree.ParseError:
        return False
    return True


def remove(text: str, wanted) -> tuple[str | None, list[str]]:
    """(the packet without the properties ``wanted`` accepts, their names). None instead of the packet
    when the edit cannot be trusted: the packet is not well-formed XML (before or after the edit), or a
    wanted property is still found."""
    elements, attributes = _scan(text, wanted)
    cuts = sorted((start, end) for start, end, _, _ in elements + attributes)
    names = sorted({name for _, _, name, _ in elements + attributes})
    if not cuts:
        return text, []
    pieces, position = [], 0
    for start, end in cuts:
        if start < position:
            continue
        pieces.append(text[position:start])
        position = end
    pieces.append(text[position:])
    edited = "".join(pieces)
    if properties(edited, wanted) or not _well_formed(text) or not _well_formed(edited):
        return None, names
    return edited, names


def reset_orientation(text: str) -> str:
    """tiff:Orientation set to 1 (the pixels were turned upright), in either form."""
    return _ORIENTATION.sub(lambda m: m.group(1) + "1", text)
