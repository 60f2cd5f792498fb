"""clean_bytes / apply_pixels: after cleaning, no location field and no thumbnail is left by pixelmine's own
reader, by exifread, by exiftool (when installed) and by a raw byte scan; JPEG scan data and the decoded
pixels of the lossless paths are unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import privacy_fixtures as pf
from pixelmine.errors import InputError
from pixelmine.privacy import exif
from pixelmine.privacy.containers import jpeg_layout, png_chunks, riff_chunks
from pixelmine.privacy.metadata import metadata_of_bytes
from pixelmine.privacy.strip import StripError, apply_pixels, clean_bytes

FIXTURES = pf.fixture_set()
NAMES = sorted(FIXTURES)
needs_exiftool = pytest.mark.skipif(not pf.have_exiftool(), reason="exiftool is not installed")


def decoded(data: bytes, *, upright: bool = False) -> np.ndarray:
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(ImageOps.exif_transpose(image) if upright else image)


@pytest.fixture(params=[False, True], ids=["strip-location", "strip-metadata"])
def strip_metadata(request):
    return request.param


@pytest.mark.parametrize("name", NAMES)
def test_no_location_and_no_thumbnail_survive_by_three_readers_and_a_byte_scan(name, strip_metadata, tmp_path):
    data, needles = FIXTURES[name]
    before = metadata_of_bytes(data)
    assert before.location and pf.raw_hits(data, needles) == list(needles)  # the planted truth is there
    result = clean_bytes(data, strip_metadata=strip_metadata)
    after = metadata_of_bytes(result.data)
    assert after.error is None
    assert after.location == [] and after.thumbnails == []
    read_by_exifread = pf.exifread_report(result.data)
    assert read_by_exifread["location"] == [] and read_by_exifread["thumbnails"] == []
    assert pf.raw_hits(result.data, needles) == []
    if strip_metadata:
        assert after.serial_numbers == [] and after.owners == []
    removed = " ".join(result.removed)
    assert "EXIF" in removed or "TIFF tags" in removed


@needs_exiftool
@pytest.mark.parametrize("name", NAMES)
def test_exiftool_finds_no_location_and_no_thumbnail(name, strip_metadata, tmp_path):
    data, _ = FIXTURES[name]
    assert pf.exiftool_report(data, tmp_path)["location"]
    report = pf.exiftool_report(clean_bytes(data, strip_metadata=strip_metadata).data, tmp_path)
    assert report["location"] == [] and report["thumbnails"] == []
    if strip_metadata:
        words = ("Serial", "Owner", "Artist", "Creator", "Copyright", "By-line", "Author")
        private = [k for k in report["tags"] if any(w in k for w in words)]
        assert private == []


def test_exifread_sees_the_planted_gps_before_cleaning():
    """The independent reader is really looking: it finds the planted fields in the originals it supports."""
    for name in ("jpeg-gps-xmp-iptc-ifd1-orient6", "png-exif-xmp", "tiff-gps"):
        report = pf.exifread_report(FIXTURES[name][0])
        assert "GPS GPSLatitude" in report["location"], name
    assert "JPEGThumbnail" in pf.exifread_report(FIXTURES["jpeg-gps-xmp-iptc-ifd1-orient6"][0])["thumbnails"]


@pytest.mark.parametrize("name", ["jpeg-gps-xmp-iptc-ifd1-orient6", "jpeg-orient1-no-trailer"])
def test_jpeg_scan_data_is_byte_identical_and_the_image_still_shows_upright(name, strip_metadata):
    data, _ = FIXTURES[name]
    result = clean_bytes(data, strip_metadata=strip_metadata)
    assert result.format == "JPEG" and result.pixels_identical and not result.reencoded
    assert pf.jpeg_scan(result.data) == pf.jpeg_scan(data)
    original = jpeg_layout(data)
    cleaned = jpeg_layout(result.data)
    assert result.data[cleaned.scan_start:] == data[original.scan_start:original.image_end]  # trailer gone
    stored = metadata_of_bytes(data).orientation
    assert metadata_of_bytes(result.data).orientation == (stored if stored != 1 or not strip_metadata else None)
    assert np.array_equal(decoded(result.data, upright=True), decoded(data, upright=True))
    kinds = [s.kind for s in cleaned.segments]
    if strip_metadata:
        assert {k for k in kinds if k.startswith(("app", "exif", "xmp", "iptc", "comment", "mpf", "jfxx"))} <= {"exif"}


def test_jpeg_keeps_what_is_not_location_and_the_maker_note_where_it_was():
    data, _ = FIXTURES["jpeg-gps-xmp-iptc-ifd1-orient6"]
    result = clean_bytes(data)
    meta = metadata_of_bytes(result.data)
    assert f"EXIF: BodySerialNumber = {pf.SERIAL}" in meta.serial_numbers
    assert f"EXIF: Artist = {pf.ARTIST}" in meta.owners and f"IPTC: By-line = {pf.ARTIST}" in meta.owners
    assert meta.captured_at == "2021-06-01T13:37:42" and meta.camera_model == "PlantedModel X1"
    assert b"a kept description" in result.data and b"kept caption" in result.data and b"a kept comment" in result.data

    def maker_note(jpeg: bytes):
        segment = next(s for s in jpeg_layout(jpeg).segments if s.kind == "exif")
        tiff = exif.Tiff(exif.split_header(segment.payload)[1])
        entry = tiff.ifds["Exif"].find(0x927C)
        return entry.value_at, tiff.value(entry)

    # edited in place: the maker note's bytes and offset (which its inner offsets may count from) are unchanged
    assert maker_note(result.data) == maker_note(data) and maker_note(data)[1] == pf.MAKER_NOTE
    assert any(r.startswith("EXIF IFD1 thumbnail") for r in result.removed)
    assert "MPF" not in " ".join(result.removed)  # there was no MPF segment, only a trailer
    assert any("after the image's end" in r for r in result.removed)


def test_keep_location_still_removes_thumbnails():
    data, needles = FIXTURES["jpeg-gps-xmp-iptc-ifd1-orient6"]
    result = clean_bytes(data, strip_location=False)
    meta = metadata_of_bytes(result.data)
    assert "EXIF GPS IFD: GPSLatitude" in meta.location and "IPTC: City" in meta.location
    assert meta.thumbnails == []
    assert "GPS GPSLatitude" in pf.exifread_report(result.data)["location"]
    assert pf.raw_hits(result.data, {k: v for k, v in needles.items() if "thumbnail" in k or "trailer" in k}) == []


def test_pillow_written_gps_is_removed_by_an_independent_reader():
    """Pillow once left GPS data behind when its GPS IFD was deleted; a file Pillow wrote is cleaned here and
    read back by exifread."""
    exif_data = Image.Exif()
    exif_data[0x0112] = 6
    exif_data.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.59123), 3: "E", 4: (2.0, 17.0, 40.1)})
    data = pf.encoded(pf.photo(), "JPEG", exif=exif_data.tobytes())
    assert pf.exifread_report(data)["location"]
    result = clean_bytes(data)
    assert pf.exifread_report(result.data)["location"] == []
    assert metadata_of_bytes(result.data).orientation == 6


def test_png_lossless_path_keeps_idat_and_pixels():
    data, _ = FIXTURES["png-exif-xmp"]
    result = clean_bytes(data)
    assert result.pixels_identical and not result.reencoded
    assert [c.data for c in png_chunks(result.data) if c.type == b"IDAT"] == \
        [c.data for c in png_chunks(data) if c.type == b"IDAT"]
    assert np.array_equal(decoded(result.data), decoded(data))
    assert b"a kept comment" in result.data  # tEXt Comment stays unless strip_metadata


@pytest.mark.parametrize("name, seed", [("png-exif-orient6", 2), ("webp-lossy-orient6", None), ("tiff-gps", 5)])
def test_orientation_is_applied_to_pixels_where_readers_ignore_it(name, seed, strip_metadata):
    data, _ = FIXTURES[name]
    result = clean_bytes(data, strip_metadata=strip_metadata)
    assert result.reencoded and result.lossless and "orientation" in (result.note or "") or name == "tiff-gps"
    assert metadata_of_bytes(result.data).orientation in (None, 1)
    out = decoded(result.data)
    if seed is not None:  # lossless source: the exact stored pixels, turned (6: 90 degrees clockwise, 8: anticlockwise)
        stored = np.asarray(pf.photo(seed))
        expected = np.rot90(stored, -1 if name.startswith("png") else 1)
        assert np.array_equal(out[..., :3], expected)
    else:
        assert np.array_equal(out, decoded(data, upright=True))


def test_webp_lossless_path_keeps_the_bitstream():
    data, _ = FIXTURES["webp-lossless-exif-xmp"]
    result = clean_bytes(data)
    assert result.format == "WEBP" and result.pixels_identical
    original = dict(riff_chunks(data))
    cleaned = dict(riff_chunks(result.data))
    assert cleaned[b"VP8L"] == original[b"VP8L"]
    assert np.array_equal(decoded(result.data), decoded(data))
    stripped = clean_bytes(data, strip_metadata=True)
    chunks = dict(riff_chunks(stripped.data))
    assert b"EXIF" not in chunks and b"XMP " not in chunks
    assert chunks[b"VP8X"][0] & 0x0C == 0  # the EXIF and XMP flags follow the chunks


def test_heic_becomes_png_with_the_decoded_pixels():
    if "heic-exif-gps-xmp" not in FIXTURES:
        pytest.skip("pillow-heif cannot encode HEIC here")
    data, _ = FIXTURES["heic-exif-gps-xmp"]
    result = clean_bytes(data)
    assert (result.format, result.extension) == ("PNG", ".png") and "converted HEIF to PNG" in result.note
    assert np.array_equal(decoded(result.data), decoded(data, upright=True))
    assert f"EXIF: BodySerialNumber = {pf.SERIAL}" in metadata_of_bytes(result.data).serial_numbers  # carried
    assert metadata_of_bytes(clean_bytes(data, strip_metadata=True).data).blocks == []


def test_an_unreadable_gps_pointer_is_removed():
    block = pf.tiff_block({"IFD0": [(0x0112, 3, 1), (0x8825, 4, 99999)]})
    data = b"\xff\xd8" + pf.segment(0xE1, b"Exif\x00\x00" + block) + pf.encoded(pf.photo(), "JPEG")[2:]
    assert metadata_of_bytes(data).location == ["EXIF GPS IFD: (unreadable)"]
    result = clean_bytes(data)
    assert metadata_of_bytes(result.data).location == []
    assert "EXIF GPS pointer (its IFD was unreadable)" in result.removed


def test_an_xmp_packet_that_cannot_be_edited_is_dropped_whole():
    packet = b"<x:xmpmeta><rdf:Description exif:GPSLatitude='1'><unclosed></x:xmpmeta>"
    data = b"\xff\xd8" + pf.segment(0xE1, pf.XMP_HEADER + packet) + pf.encoded(pf.photo(), "JPEG")[2:]
    result = clean_bytes(data)
    assert any(r.startswith("XMP packet (it held exif:GPSLatitude") for r in result.removed)
    assert b"GPSLatitude" not in result.data


def test_damaged_files_are_refused_with_the_reason():
    with pytest.raises(StripError, match="cannot clean this file"):
        clean_bytes(b"\xff\xd8\xff\xe1\xff\xffExif")
    with pytest.raises(InputError):
        clean_bytes(b"not an image at all")


def test_apply_pixels_writes_upright_images_without_location():
    for name in ("jpeg-gps-xmp-iptc-ifd1-orient6", "png-exif-orient6", "webp-lossless-exif-xmp"):
        data, needles = FIXTURES[name]
        rgb = decoded(data, upright=True)[..., :3].copy()
        rgb[4:20, 4:20] = (64, 64, 64)
        result = apply_pixels(data, rgb)
        meta = metadata_of_bytes(result.data)
        assert meta.location == [] and meta.thumbnails == [] and meta.orientation in (None, 1), name
        assert pf.raw_hits(result.data, needles) == [], name
        out = decoded(result.data)[..., :3]
        assert out.shape == rgb.shape
        if name.startswith("jpeg"):
            assert result.format == "JPEG" and not result.lossless
            assert np.abs(out.astype(int) - rgb).mean() < 3
            from PIL import JpegImagePlugin

            with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(result.data)) as after:
                assert JpegImagePlugin.get_sampling(after) == JpegImagePlugin.get_sampling(before)
            assert f"EXIF: BodySerialNumber = {pf.SERIAL}" in meta.serial_numbers  # only location was asked for
        else:
            assert np.array_equal(out, rgb) and result.lossless, name
    stripped = apply_pixels(FIXTURES["png-exif-xmp"][0], decoded(FIXTURES["png-exif-xmp"][0])[..., :3],
                            strip_metadata=True)
    assert metadata_of_bytes(stripped.data).blocks == []


def test_apply_pixels_refuses_a_wrong_array():
    with pytest.raises(InputError, match="H x W x 3"):
        apply_pixels(FIXTURES["png-exif-xmp"][0], np.zeros((4, 4), np.uint8))


def test_progressive_jpeg_scans_are_copied_whole_and_a_trailer_after_them_goes():
    exif_data = Image.Exif()
    exif_data.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.59123)})
    data = pf.encoded(pf.photo(3, (96, 64)), "JPEG", progressive=True, exif=exif_data.tobytes())
    layout = jpeg_layout(data + b"TRAILER-WITH-SECRETS")
    assert layout.has_eoi and layout.image_end == len(data)
    result = clean_bytes(data + b"TRAILER-WITH-SECRETS")
    assert result.pixels_identical and b"TRAILER" not in result.data
    assert result.data[jpeg_layout(result.data).scan_start:] == data[layout.scan_start:]
    assert np.array_equal(decoded(result.data), decoded(data))
