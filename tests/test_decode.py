"""Decoding for the networks: orientation, odd modes, DCT-domain downscaling, torchvision-equal cropping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixelmine.imaging.decode import BACKGROUND, load_pixels, open_rgb, prepare


def _jpeg(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **params)
    return buffer.getvalue()


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    # left half red, right half blue, stored landscape with "rotate 90 CW to display" (orientation 6)
    array = np.zeros((40, 60, 3), np.uint8)
    array[:, :30] = (255, 0, 0)
    array[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = open_rgb(_jpeg(Image.fromarray(array), exif=exif.tobytes()))
    assert image.size == (40, 60)  # portrait once upright
    pixels = np.asarray(image).astype(int)
    assert pixels[5, 20, 0] > 200 and pixels[5, 20, 2] < 60  # the red half is now on top
    assert pixels[55, 20, 2] > 200 and pixels[55, 20, 0] < 60


def test_alpha_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:, 5:, 3] = 255  # ... opaque on the right half only
    image = np.asarray(open_rgb(_png(Image.fromarray(rgba, "RGBA"))))
    assert tuple(image[0, 0]) == BACKGROUND == (255, 255, 255)
    assert tuple(image[0, 9]) == (255, 0, 0)
    la = Image.fromarray(np.stack([np.full((4, 4), 0, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA")
    assert tuple(np.asarray(open_rgb(_png(la)))[0, 0]) == (255, 255, 255)


def test_palette_with_transparency_becomes_white_background():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((7, 7), 1)
    data = _png(image, transparency=0)
    pixels = np.asarray(open_rgb(data))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[7, 7]) == (0, 255, 0)


def test_cmyk_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    pixels = np.asarray(open_rgb(_jpeg(cmyk))).astype(int)
    assert pixels.shape == (16, 16, 3)
    assert pixels[8, 8, 0] > 200 and pixels[8, 8, 1] < 60 and pixels[8, 8, 2] < 60


def test_sixteen_bit_grey_is_scaled_by_its_full_range():
    ramp = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    image = open_rgb(_png(Image.fromarray(ramp)))
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert 100 < pixels[4, 32, 0] < 155  # the middle of the ramp stays in the middle, not clipped to 255


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixels = np.asarray(open_rgb(buffer.getvalue())).astype(int)
    assert pixels[4, 4, 0] > 200 and pixels[4, 4, 2] < 60


def test_greyscale_and_bilevel_become_three_channels():
    for mode, value in (("L", 128), ("1", 1)):
        pixels = np.asarray(open_rgb(_png(Image.new(mode, (5, 5), value))))
        assert pixels.shape == (5, 5, 3) and len(set(pixels[2, 2])) == 1


@pytest.mark.parametrize("size", [(250, 250), (451, 300), (300, 451), (640, 480), (100, 60)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_prepare_equals_torchvision_resize_and_center_crop(size, interpolation):
    from skimage import data
    from torchvision import transforms as T

    mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    image = Image.fromarray(data.astronaut()).resize(size)
    expected = np.asarray(T.CenterCrop(224)(T.Resize(256, interpolation=mode)(image))).astype(int)
    got = prepare(image, input_size=224, resize=256, interpolation=interpolation)
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
    diff = np.abs(expected - got.astype(int))
    assert diff.mean() < 0.25 and diff.max() <= 8  # float rounding only


def test_large_jpeg_is_drafted_in_the_dct_domain_with_little_loss():
    from skimage import data

    big = Image.fromarray(data.astronaut()).resize((1600, 1200), Image.Resampling.BICUBIC)
    payload = _jpeg(big)
    drafted = open_rgb(payload, min_side=256)
    assert drafted.size == (400, 300)  # decoded at 1/4 scale: the shorter side stays >= 256
    full = prepare(open_rgb(payload), input_size=224, resize=256)
    fast = load_pixels(payload, input_size=224, resize=256)
    assert np.abs(full.astype(int) - fast.astype(int)).mean() < 3.0


def test_undecodable_bytes_raise():
    with pytest.raises(Exception):
        open_rgb(b"\xff\xd8\xff\xe0 this is not a jpeg")
