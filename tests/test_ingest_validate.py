"""Every ingest status, from generated files with a known answer."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import imagefactory as f
from pixelmine.ingest import STATUSES, ValidationLimits, validate_file


def check(path, status, *, error_match=None, limits=ValidationLimits()):
    record = validate_file(str(path), limits)
    assert record.status == status, (record.status, record.error)
    assert status in STATUSES
    if status == "ok":
        assert record.error is None
    else:
        assert record.error, "every problem carries a message"
        if error_match:
            assert error_match in record.error
    return record


def test_ok_jpeg_records_properties_and_hashes(tmp_path):
    path = f.save(f.photo(1, (120, 80)), tmp_path / "a.jpg", quality=90)
    record = check(path, "ok")
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record.format, record.width, record.height, record.mode) == ("JPEG", 120, 80, "RGB")
    assert record.bit_depth == 8 and record.frames == 1 and record.orientation is None
    assert len(record.phash) == 16


def test_empty_file(tmp_path):
    check(f.write(tmp_path / "empty.jpg", b""), "empty_file", error_match="0 bytes")


@pytest.mark.parametrize("name,data,kind", [
    ("notes.jpg", b"This is a shopping list, not a photo.\nmilk\neggs\n", "text file"),
    ("scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF document"),
    ("download.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML page"),
    ("archive.jpg", b"PK\x03\x04" + bytes(60), "ZIP archive"),
])
def test_not_an_image_names_the_real_kind(tmp_path, name, data, kind):
    check(f.write(tmp_path / name, data), "not_an_image", error_match=kind)


def test_truncated_jpeg(tmp_path):
    data = f.encoded(f.photo(2, (200, 150)), "JPEG", quality=95)
    check(f.write(tmp_path / "cut.jpg", data[: len(data) // 2]), "truncated", error_match="re-copy")


def test_truncated_png(tmp_path):
    data = f.encoded(f.photo(3, (200, 150)), "PNG")
    check(f.write(tmp_path / "cut.png", data[: len(data) * 2 // 3]), "truncated")


def test_png_with_broken_crc_is_corrupt(tmp_path):
    check(f.write(tmp_path / "crc.png", f.png_broken_crc(f.photo(4))), "corrupt")


def test_garbage_after_a_png_signature_is_corrupt(tmp_path):
    check(f.write(tmp_path / "g.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200)), "corrupt")


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    record = check(f.write(tmp_path / "bomb.png", f.png_bomb()), "too_large", error_match="decompression bomb")
    assert record.phash is None


def test_pixel_limit_is_configurable(tmp_path):
    path = f.save(f.photo(5, (100, 100)), tmp_path / "p.png")
    check(path, "too_large", limits=ValidationLimits(max_pixels=5_000))
    check(path, "ok", limits=ValidationLimits(max_pixels=10_000))


def test_too_small(tmp_path):
    check(f.save(f.photo(6, (4, 4)), tmp_path / "tiny.png"), "too_small", error_match="min_side")


def test_unsupported_format_svg(tmp_path):
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    check(f.write(tmp_path / "logo.png", svg), "unsupported_format", error_match="SVG")


def test_xpm_is_ok(tmp_path):
    record = check(f.write(tmp_path / "pixmap.xpm", f.xpm_bytes(16, 12)), "ok")
    assert (record.format, record.width, record.height) == ("XPM", 16, 12)


@pytest.mark.parametrize("name,head,kind", [
    # header fields Pillow refuses after the magic, as in Pillow's fuzzed fli_oob files
    ("fuzzed.fli", b"\x0f\xfe\x00\xa3\x11\xaf\xf5\x00\x00\x10\x00\x10\xff\x00", "FLI"),
    ("fuzzed.flc", b"\x0f\xfe\x00\xa3\x12\xaf\xf5\x00\x00\x10\x00\x10\xff\x00", "FLC"),
    ("no_cursors.cur", b"\x00\x00\x02\x00\x00\x00", "CUR"),
])
def test_damaged_animation_or_cursor_is_corrupt_not_unknown(tmp_path, name, head, kind):
    check(f.write(tmp_path / name, head + bytes(64)), "corrupt", error_match=f"starts like a {kind}")


def test_unknown_binary_is_unsupported_format(tmp_path):
    check(f.write(tmp_path / "blob.jpg", bytes(range(256)) * 4), "unsupported_format")


def test_vanished_file_is_unreadable(tmp_path):
    check(tmp_path / "gone.jpg", "unreadable", error_match="vanished")


def test_dangling_symlink_is_unreadable(tmp_path):
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "link.jpg")
    check(tmp_path / "link.jpg", "unreadable")


def test_permission_denied_message(tmp_path, monkeypatch):
    path = f.save(f.photo(7), tmp_path / "locked.jpg")
    real_open = open

    def deny(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    check(path, "unreadable", error_match="chmod")


def test_cmyk_jpeg_is_ok(tmp_path):
    record = check(f.save(f.photo(8).convert("CMYK"), tmp_path / "cmyk.jpg"), "ok")
    assert record.mode == "CMYK"


def test_16bit_greyscale_png_is_ok(tmp_path):
    img = Image.fromarray((f.np.arange(64 * 48, dtype=f.np.uint16).reshape(48, 64) * 20))
    record = check(f.save(img, tmp_path / "grey16.png"), "ok")
    assert record.mode.startswith("I") and record.bit_depth == 16 and record.phash


def test_16bit_colour_png_reports_its_real_depth(tmp_path):
    record = check(f.write(tmp_path / "rgb48.png", f.png_16bit_rgb()), "ok")
    assert record.bit_depth == 16


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "1"])
def test_palette_alpha_grey_are_ok(tmp_path, mode):
    img = f.photo(9).convert(mode)
    record = check(f.save(img, tmp_path / f"m_{mode}.png"), "ok")
    assert record.mode == mode


def test_exif_orientation_is_recorded(tmp_path):
    record = check(f.write(tmp_path / "rot.jpg", f.jpeg_with_orientation(f.photo(10, (80, 40)), 6)), "ok")
    assert record.orientation == 6
    assert (record.width, record.height) == (80, 40)  # stored as encoded; applied when pixels are read


@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png")])
def test_animated_images_are_ok_with_frame_count(tmp_path, fmt, ext):
    record = check(f.write(tmp_path / f"anim.{ext}", f.animated(fmt, frames=3)), "ok")
    assert record.frames == 3


@pytest.mark.parametrize("fmt,ext", [("HEIF", "heic"), ("AVIF", "avif"), ("WEBP", "webp")])
def test_modern_formats_decode(tmp_path, fmt, ext):
    from pixelmine.imaging.plugins import register_optional_decoders

    register_optional_decoders()
    record = check(f.write(tmp_path / f"x.{ext}", f.encoded(f.photo(11), fmt)), "ok")
    assert record.format in (fmt, "HEIF", "AVIF")


def test_byte_limit(tmp_path):
    path = f.save(f.photo(12), tmp_path / "big.png")
    record = check(path, "too_large", limits=ValidationLimits(max_bytes=100), error_match="byte limit")
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_validation_never_modifies_the_file(tmp_path):
    path = f.write(tmp_path / "rot.jpg", f.jpeg_with_orientation(f.photo(13), 3))
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    validate_file(str(path))
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=2048), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
                                                              b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"]))
def test_arbitrary_bytes_always_get_a_status(tmp_path_factory, payload, prefix):
    path = tmp_path_factory.mktemp("fuzz") / "x.jpg"
    path.write_bytes(prefix + payload)
    record = validate_file(str(path), ValidationLimits(timeout_s=5))
    assert record.status in STATUSES
    assert (record.status == "ok") == (record.error is None)


def test_phash_matches_the_imagehash_reference_values():
    from skimage import data

    from pixelmine.ingest.validate import phash

    # Values computed with imagehash.phash 4.3 on the same images.
    assert phash(Image.fromarray(data.chelsea())) == "b15fe6465121175e"
    assert phash(Image.fromarray(data.coffee())) == "bb8320376c0f3637"
    assert phash(Image.fromarray(data.camera())) == "bff1c1c0434e8cbc"


def test_phash_survives_resizing_and_recompression(tmp_path):
    from pixelmine.ingest.validate import phash

    original = Image.fromarray(__import__("skimage").data.astronaut())
    small = Image.open(__import__("io").BytesIO(f.encoded(original.resize((200, 200)), "JPEG", quality=30)))
    distance = bin(int(phash(original), 16) ^ int(phash(small), 16)).count("1")
    other = bin(int(phash(original), 16) ^ int(phash(Image.fromarray(__import__("skimage").data.coffee())), 16)).count("1")
    assert distance <= 6 < other


def test_decoding_time_is_bounded(tmp_path):
    noise = f.np.random.default_rng(0).integers(0, 256, size=(1500, 1500, 3), dtype=f.np.uint8)
    path = f.save(Image.fromarray(noise), tmp_path / "slow.png", compress_level=1)
    check(path, "corrupt", limits=ValidationLimits(timeout_s=0.002), error_match="longer than")
    check(path, "ok")


def test_manifest_given_as_a_source(tmp_path):
    import pixelmine

    f.save(f.photo(1), tmp_path / "imgs" / "a.jpg")
    (tmp_path / "list.csv").write_text("path,label\nimgs/a.jpg,thing\n")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(tmp_path / "list.csv", progress=False)
    assert [i["label"] for i in ws.images()] == ["thing"]
