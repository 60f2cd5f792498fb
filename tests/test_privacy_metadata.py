"""read_metadata: every planted field is found, in every container, and a broken file is a row with its
error, never an exception."""

from __future__ import annotations

import io
import random
import struct

import pytest
from PIL import Image

import privacy_fixtures as pf
from pixelmine.privacy import xmp
from pixelmine.privacy.metadata import ImageMetadata, metadata_of_bytes, read_metadata

PLANTED_GPS = ["GPSVersionID", "GPSLatitudeRef", "GPSLatitude", "GPSLongitudeRef", "GPSLongitude", "GPSAltitudeRef",
               "GPSAltitude", "GPSTimeStamp", "GPSMapDatum", "GPSProcessingMethod", "GPSDateStamp"]
PLANTED_XMP = ["XMP: exif:GPSLatitude", "XMP: exif:GPSLongitude", "XMP: photoshop:City",
               "XMP: Iptc4xmpExt:LocationCreated"]


def test_every_planted_field_of_the_jpeg_is_found(tmp_path):
    data, _ = pf.planted_jpeg(6)
    path = tmp_path / "planted.jpg"
    path.write_bytes(data)
    meta = read_metadata(path)
    assert meta.error is None and meta.format == "JPEG"
    assert [f"EXIF GPS IFD: {name}" for name in PLANTED_GPS] == meta.location[:len(PLANTED_GPS)]
    for field in PLANTED_XMP + ["IPTC: City", "IPTC: Country-PrimaryLocationName"]:
        assert field in meta.location
    # the preview JPEG after EOI has its own GPS IFD: it is reported too, under its own name
    assert "trailer image: EXIF GPS IFD: GPSLatitude" in meta.location
    assert f"EXIF: BodySerialNumber = {pf.SERIAL}" in meta.serial_numbers
    assert f"EXIF: LensSerialNumber = {pf.LENS_SERIAL}" in meta.serial_numbers
    assert f"XMP: aux:SerialNumber = {pf.SERIAL}" in meta.serial_numbers
    for owner in (f"EXIF: CameraOwnerName = {pf.OWNER}", f"EXIF: Artist = {pf.ARTIST}",
                  "EXIF: Copyright = (c) Planted Copyright", f"XMP: dc:creator = {pf.ARTIST}",
                  f"IPTC: By-line = {pf.ARTIST}"):
        assert owner in meta.owners
    assert meta.has_thumbnail
    assert {"EXIF IFD1 thumbnail", "JFIF thumbnail (2x2)", "Photoshop thumbnail"} <= set(meta.thumbnails)
    assert any(t.startswith("data after the image's end") for t in meta.thumbnails)
    assert (meta.camera_make, meta.camera_model) == ("PlantedMake", "PlantedModel X1")
    assert meta.captured_at == "2021-06-01T13:37:42"  # DateTimeOriginal, not IFD0's DateTime
    assert meta.orientation == 6
    assert set(meta.blocks) == {"EXIF", "XMP", "IPTC", "JPEG comment"}


@pytest.mark.parametrize("name", ["png-exif-xmp", "png-exif-orient6", "webp-lossless-exif-xmp", "webp-lossy-orient6",
                                  "heic-exif-gps-xmp", "tiff-gps"])
def test_other_containers_give_the_same_fields(name):
    fixtures = pf.fixture_set()
    if name not in fixtures:
        pytest.skip("pillow-heif cannot encode HEIC here")
    data, _ = fixtures[name]
    meta = metadata_of_bytes(data)
    assert meta.error is None
    assert [f"EXIF GPS IFD: {gps}" for gps in PLANTED_GPS] == meta.location[:len(PLANTED_GPS)]
    assert f"EXIF: BodySerialNumber = {pf.SERIAL}" in meta.serial_numbers
    assert f"EXIF: Artist = {pf.ARTIST}" in meta.owners
    assert meta.camera_make == "PlantedMake"
    if not name.startswith("tiff"):
        assert set(PLANTED_XMP) <= set(meta.location)
        assert "EXIF IFD1 thumbnail" in meta.thumbnails
        assert meta.captured_at == "2021-06-01T13:37:42"
    expected_orientation = {"png-exif-orient6": 6, "webp-lossy-orient6": 6, "tiff-gps": 8}.get(name, 1)
    assert meta.orientation == expected_orientation
    assert meta.format == {"png": "PNG", "webp": "WEBP", "heic": "HEIF", "tiff": "TIFF"}[name.split("-")[0]]


def test_png_reads_the_raw_profile_and_the_author_text():
    data, _ = pf.planted_png()
    meta = metadata_of_bytes(data)
    assert f"PNG text: Author = {pf.OWNER}" in meta.owners
    # the zTXt "Raw profile type xmp" holds the same packet: its location is found (and listed once)
    assert meta.location.count("XMP: exif:GPSLatitude") == 1


def test_gps_written_by_pillow_is_read():
    exif = Image.Exif()
    exif[0x010F] = "PillowMake"
    exif[0x0132] = "2020:01:02 03:04:05"
    exif.get_ifd(0x8825).update({1: "S", 2: (33.0, 51.0, 54.5), 3: "E", 4: (151.0, 12.0, 35.1)})
    data = pf.encoded(pf.photo(), "JPEG", exif=exif.tobytes())
    meta = metadata_of_bytes(data)
    assert {"EXIF GPS IFD: GPSLatitude", "EXIF GPS IFD: GPSLongitude"} <= set(meta.location)
    assert meta.captured_at == "2020-01-02T03:04:05"  # DateTime when there is no DateTimeOriginal
    assert not meta.has_thumbnail


def test_an_image_without_metadata_has_empty_lists():
    meta = metadata_of_bytes(pf.encoded(pf.photo(), "PNG"))
    assert meta == ImageMetadata(path="", format="PNG")
    assert meta.to_dict()["has_thumbnail"] is False


def test_gif_and_bmp_go_through_pillow():
    assert metadata_of_bytes(pf.encoded(pf.photo(), "GIF")).format == "GIF"
    assert metadata_of_bytes(pf.encoded(pf.photo(), "BMP")).format == "BMP"


def test_a_missing_file_is_an_error_not_an_exception(tmp_path):
    meta = read_metadata(tmp_path / "gone.jpg")
    assert meta.error and "cannot read the file" in meta.error and meta.format is None


@pytest.mark.parametrize("data", [b"", b"hello, I am text", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*garbage",
                                  b"\xff\xd8\xff\xe1\xff\xffExif", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
                                  b"RIFF\x10\x00\x00\x00WEBPVP8X\xff\xff\xff\xff", b"II*\x00\xff\xff\xff\xff"])
def test_broken_files_give_an_error(data):
    meta = metadata_of_bytes(data)
    assert isinstance(meta, ImageMetadata)
    assert meta.error or not (meta.location or meta.serial_numbers)


def test_an_ifd_loop_and_out_of_range_offsets_end():
    # IFD0 whose next-IFD pointer points at itself, and an entry whose value lies far outside the block
    block = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHII", 0x010F, 2, 40, 9999) \
        + struct.pack(">I", 8)
    meta = metadata_of_bytes(b"\xff\xd8" + pf.segment(0xE1, b"Exif\x00\x00" + block) + b"\xff\xda\x00\x02\xff\xd9")
    assert meta.camera_make is None and meta.format == "JPEG"


def test_random_damage_never_raises():
    data, _ = pf.planted_jpeg(6)
    rng = random.Random(0)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(2, 2400)] = rng.randrange(256)
        cut = rng.choice([len(damaged), rng.randrange(2, len(damaged))])
        meta = metadata_of_bytes(bytes(damaged[:cut]))
        assert isinstance(meta, ImageMetadata)


# -- XMP by property name ------------------------------------------------------------------------------
PACKET = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"
 xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/"
 xmlns:Iptc4xmpCore="http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/" xmlns:dc="http://purl.org/dc/elements/1.1/"
 exif:GPSAltitude="100/1" drone-dji:GpsLatitude="+48.85" dc:format="image/jpeg">
<Iptc4xmpCore:Location>Quai Branly</Iptc4xmpCore:Location>
<exif:GPSLatitude/>
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">kept</rdf:li></rdf:Alt></dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def test_xmp_properties_are_found_in_attribute_element_and_empty_forms():
    names = [name for name, _ in xmp.properties(PACKET, xmp.is_location)]
    assert names == ["exif:GPSAltitude", "drone-dji:GpsLatitude", "Iptc4xmpCore:Location", "exif:GPSLatitude"]
    assert dict(xmp.properties(PACKET))["Iptc4xmpCore:Location"] == "Quai Branly"


def test_xmp_removal_keeps_the_rest_and_stays_well_formed():
    edited, removed = xmp.remove(PACKET, xmp.is_location)
    assert removed == ["Iptc4xmpCore:Location", "drone-dji:GpsLatitude", "exif:GPSAltitude", "exif:GPSLatitude"]
    assert xmp.properties(edited, xmp.is_location) == []
    assert 'dc:format="image/jpeg"' in edited and "kept" in edited
    from xml.etree import ElementTree

    ElementTree.fromstring(edited)


def test_xmp_removal_that_cannot_be_verified_gives_none():
    broken = "<x:xmpmeta><exif:GPSLatitude>1<exif:GPSLatitude>2</exif:GPSLatitude>"  # unbalanced
    edited, removed = xmp.remove(broken, xmp.is_location)
    assert edited is None and removed == ["exif:GPSLatitude"]


def test_xmp_orientation_reset():
    assert xmp.reset_orientation('<a tiff:Orientation="6"/><tiff:Orientation>8</tiff:Orientation>') == \
        '<a tiff:Orientation="1"/><tiff:Orientation>1</tiff:Orientation>'


def test_orientation_and_make_fall_back_to_xmp():
    data = b"\xff\xd8" + pf.segment(0xE1, pf.XMP_HEADER + pf.xmp_packet(orientation=3)) + \
        pf.encoded(pf.photo(), "JPEG")[2:]
    meta = metadata_of_bytes(data)
    assert meta.orientation == 3 and meta.camera_make == "PlantedMake"


def test_pillow_can_still_read_the_fixture():
    data, _ = pf.planted_jpeg(6)
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif()[0x0112] == 6
