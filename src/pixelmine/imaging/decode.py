"""Decode an image file into the RGB pixels a network sees.

Choices (the same for every stage that reads pixels):
- **EXIF orientation** is applied (``ImageOps.exif_transpose``), so a phone photo is upright.
- **Animated** files (GIF, WebP, APNG, multi-page TIFF): the first frame.
- **Alpha** (RGBA, LA, PA, palette with transparency) is composited on **white**: product shots and
  clip-art with transparent backgrounds are usually meant to be seen on a light page, and a white
  background is what ImageNet's product photos show; compositing on black would turn dark-on-transparent
  artwork into a black square.
- **CMYK** is converted through its embedded ICC profile when it has one, else with Pillow's formula.
- **16-bit and 32-bit** greyscale (I;16, I) is scaled to 8 bits by its full range (65535 -> 255);
  float images (F) by their own min..max. Palette, greyscale, bilevel, YCbCr, LAB and HSV convert to RGB.
- **Large JPEGs** are decoded at a reduced size in the DCT domain (``Image.draft``, a power-of-two
  scale chosen so the shorter side stays >= the resize target), which is 3-4x cheaper than a full decode
  followed by a downscale; the final resize then has less than a factor 2 left.

:func:`prepare` reproduces torchvision's ``Resize(resize) + CenterCrop(input_size)`` on PIL images with
one ``Image.resize(box=...)`` call that only resamples the pixels inside the crop (same output, less work).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps

from .plugins import register_optional_decoders

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = frozenset(range(2, 9))  # orientations that need a flip or a rotation


def open_rgb(source, *, min_side: int | None = None) -> Image.Image:
    """Open ``source`` (a path, bytes or a file object) as an upright RGB image.

    ``min_side``: when set, JPEGs are decoded at the smallest power-of-two reduction whose shorter side
    is still >= ``min_side`` pixels (never below it, so quality for the later resize is kept).
    Raises the decoder's exception for a file that cannot be decoded.
    """
    register_optional_decoders()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EXIF/ICC/palette warnings: the pixels are still fine
        image = Image.open(source)
        if min_side and image.format == "JPEG":
            width, height = image.size
            scale = min_side / min(width, height)
            if scale < 0.5:  # draft can only halve; anything less saves nothing
                # Requested size in the stored orientation; exif_transpose only swaps the sides.
                image.draft("RGB", (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))))
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        # exif_transpose copies the whole image even when there is nothing to do; only call it when needed
        if image.getexif().get(_ORIENTATION, 1) in _TRANSPOSED:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, following the module's documented choices."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    return image.convert("RGB")  # L, 1, YCbCr, LAB, HSV


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if array.ndim == 3:  # e.g. I;16 RGB stored planar by some plugins: keep the first channel
        array = array[..., 0]
    if image.mode == "F" or array.dtype.kind == "f":
        array = array.astype(np.float64)
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(array, nan=low) - low) / ((high - low) or 1.0) * 255.0
    else:
        array = array.astype(np.int64)
        peak = int(array.max()) if array.size else 0
        if peak <= 255 and array.min() >= 0:
            scaled = array  # an 8-bit image stored in a wider mode
        elif peak <= 65535 and array.min() >= 0:
            scaled = array / 257.0  # full 16-bit range -> 0..255
        else:
            low, high = int(array.min()), peak
            scaled = (array - low) / float(high - low) * 255.0
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def prepare(image: Image.Image, *, input_size: int, resize: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize the shorter side to ``resize`` and take the centred ``input_size`` square: uint8 (S, S, 3).

    Equals torchvision ``Resize(resize)`` + ``CenterCrop(input_size)`` on a PIL image: the crop box is
    mapped back to the source and only that region is resampled (antialiased when shrinking).
    """
    box = crop_box(image.size, input_size=input_size, resize=resize)
    resized = image.resize((input_size, input_size), _RESAMPLE[interpolation], box=box)
    return np.asarray(resized, dtype=np.uint8)


def crop_box(size: tuple[int, int], *, input_size: int, resize: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in the upright source's pixels of the square :func:`prepare` takes: where
    a network's view (and an explanation's map) lies on the image."""
    width, height = size
    # torchvision's output size: the short side becomes `resize`, the long side int(resize * long / short)
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    scale_x, scale_y = width / new_w, height / new_h
    # torchvision CenterCrop offsets, in resized pixels
    top = int(round((new_h - input_size) / 2.0))
    left = int(round((new_w - input_size) / 2.0))
    return (left * scale_x, top * scale_y, (left + input_size) * scale_x, (top + input_size) * scale_y)


def load_pixels(source, *, input_size: int, resize: int, interpolation: str = "bilinear") -> np.ndarray:
    """open_rgb + prepare: the (input_size, input_size, 3) uint8 crop a backbone takes."""
    image = open_rgb(source, min_side=resize)
    return prepare(image, input_size=input_size, resize=resize, interpolation=interpolation)
