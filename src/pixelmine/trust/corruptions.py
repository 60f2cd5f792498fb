"""Corrupted copies of a test split, for measuring how well a classifier holds up under common corruptions.

The corruptions and their five severities follow ImageNet-C (Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR 2019): the per-severity constants below are
the published ones. The code is written here with numpy and Pillow only; OpenCV, ImageMagick and the
``imagecorruptions`` package (which fails on current scikit-image) are not used.

Choices:

* Everything is in memory and deterministic: the same (images, name, severity, seed) gives the same bytes.
  Image ``i`` of a batch draws from its own stream, seeded by (seed, name, severity, i) with ``i`` its
  index in the batch. An image therefore gets the same corruption whatever the other images are, but it
  gets a different draw if it is moved to another position.
* ImageNet-C is defined on 224 px images. Parameters that are lengths in pixels (defocus radius and its
  anti-alias blur, motion-blur length and fall-off) are multiplied by min(H, W) / 224, so a 28 px or a
  500 x 375 image gets a blur comparable to the reference size. Zoom, pixelate and fog are already
  relative to the image size; noise, brightness, contrast, saturation and JPEG are per pixel or per image.
  On small images the mildest blurs are therefore sub-pixel and change little, as they would if a blurred
  224 px image were downscaled.
* Pixel work is in float32 on [0, 1]; results are clipped and rounded back to uint8. Blurs use reflected
  ("symmetric") borders, so a flat image stays flat right up to its edges (no dark border).

Where this differs from the reference code: fog's plasma fractal is a sum of smooth value-noise octaves
(amplitude divided by the published decay at each octave) instead of diamond-square; the defocus disk is
anti-aliased by its pixel coverage, so that scaled, fractional radii blur smoothly; motion-blur taps are
placed with bilinear weights instead of being rounded to whole pixels; zoom blur zooms both axes of a
non-square image (the reference crops a square).
"""

from __future__ import annotations

import io
import numbers
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "zoom_blur",
    "brightness", "contrast", "fog", "pixelate", "jpeg_compression", "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)

REFERENCE_SIZE = 224  # ImageNet-C's image side; pixel lengths below are for this size

# Published ImageNet-C constants, one entry per severity 1..5.
GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
DEFOCUS_RADIUS_ALIAS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
MOTION_RADIUS_SIGMA = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
ZOOM_STOP_STEP = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))  # np.arange(1, stop, step)
MOTION_ANGLE_RANGE = (-45.0, 45.0)
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
FOG_STRENGTH_DECAY = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)
SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))

_CHUNK = 16  # images processed together: vectorised, with float work memory bounded for large splits

Streams = Sequence[np.random.Generator]


def corrupt(images: np.ndarray, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """Corrupted copy of a batch: uint8 (N, H, W, 3) in, uint8 (N, H, W, 3) out.

    Severity 0 returns an identical copy. Deterministic: image ``i`` draws from a stream seeded by
    (seed, name, severity, i), ``i`` being its index in this batch.
    """
    _check_images(images, ndim=4)
    name, severity, seed = _check_options(name, severity, seed)
    if severity == 0:
        return images.copy()
    corruptor = _CORRUPTORS[name]
    code = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    out = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK]
        streams = [np.random.default_rng([seed, code, severity, start + k]) for k in range(len(chunk))]
        result = corruptor(chunk, severity, streams)
        out[start:start + len(chunk)] = result if result.dtype == np.uint8 else _to_uint8(result)
    return out


def corrupt_one(image: np.ndarray, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """One uint8 (H, W, 3) image; the same as the first image of ``corrupt`` on a batch."""
    _check_images(image, ndim=3)
    return corrupt(image[None], name, severity, seed=seed)[0]


def _check_images(images, *, ndim: int) -> None:
    expected = "uint8 (N, H, W, 3)" if ndim == 4 else "uint8 (H, W, 3)"
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array, {expected}; got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise InputError(f"images must be {expected}; got dtype {images.dtype}. "
                         "Convert first, e.g. np.clip(x * 255, 0, 255).round().astype(np.uint8)")
    if images.ndim != ndim or images.shape[-1] != 3 or 0 in images.shape[-3:-1]:
        raise InputError(f"images must be {expected} (RGB; repeat a grey channel 3 times); "
                         f"got shape {images.shape}")


def _check_options(name, severity, seed) -> tuple[str, int, int]:
    if name not in CORRUPTIONS:
        raise InputError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 0 <= severity <= 5:
        raise InputError(f"severity must be an integer 0..5 (0 = unchanged); got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    return name, int(severity), int(seed)


def _to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def _pixel_scale(images: np.ndarray) -> float:
    return min(images.shape[1:3]) / REFERENCE_SIZE


# ---- noise -------------------------------------------------------------------------------------------

def _gaussian_noise(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    noise = np.stack([rng.standard_normal(images.shape[1:], dtype=np.float32) for rng in streams])
    return _to_float(images) + np.float32(GAUSSIAN_SIGMA[severity - 1]) * noise


def _shot_noise(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    photons = SHOT_PHOTONS[severity - 1]
    x = _to_float(images)
    counts = np.stack([rng.poisson(xi * photons) for rng, xi in zip(streams, x)])
    return counts.astype(np.float32) / np.float32(photons)


def _impulse_noise(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    # salt and pepper on each channel value independently, half of each, as scikit-image's "s&p" does
    amount = np.float32(IMPULSE_AMOUNT[severity - 1])
    draw = np.stack([rng.random(images.shape[1:], dtype=np.float32) for rng in streams])
    return np.where(draw < amount / 2, np.float32(1), np.where(draw < amount, np.float32(0), _to_float(images)))


# ---- blur --------------------------------------------------------------------------------------------

def _defocus_blur(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    radius, alias = DEFOCUS_RADIUS_ALIAS[severity - 1]
    scale = _pixel_scale(images)
    return _convolve(_to_float(images), _disk_kernel(radius * scale, alias * scale)[None])


def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    half = int(np.ceil(radius + 3 * alias_sigma)) + 1
    grid = np.arange(-half, half + 1)
    sub = 8  # subsamples per pixel side: coverage, so fractional radii give a smooth edge
    fine = (grid[:, None] + (np.arange(sub) + 0.5) / sub - 0.5).ravel()
    inside = fine[:, None] ** 2 + fine[None, :] ** 2 <= radius ** 2
    kernel = inside.reshape(len(grid), sub, len(grid), sub).mean(axis=(1, 3))
    if kernel.sum() == 0:
        kernel[half, half] = 1.0
    if alias_sigma > 0:
        gauss = np.exp(-((grid[:, None] - grid[None, :]) ** 2) / (2 * alias_sigma ** 2))
        kernel = gauss @ kernel @ gauss.T
    return (kernel / kernel.sum()).astype(np.float32)


def _motion_blur(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    radius, sigma = MOTION_RADIUS_SIGMA[severity - 1]
    scale = _pixel_scale(images)
    angles = [rng.uniform(*MOTION_ANGLE_RANGE) for rng in streams]
    kernels = np.stack([_motion_kernel(radius * scale, sigma * scale, angle) for angle in angles])
    return _convolve(_to_float(images), kernels)


def _motion_kernel(radius: float, sigma: float, angle_degrees: float) -> np.ndarray:
    # ImageMagick's motion blur (used by ImageNet-C): 2*ceil(radius)+1 taps reaching ahead of the pixel
    # along the angle, tap d weighted exp(-d^2 / 2 sigma^2); the smear is one-sided.
    distances = np.arange(2 * int(np.ceil(radius)) + 1, dtype=np.float64)
    weights = np.exp(-distances ** 2 / (2 * max(sigma, 1e-6) ** 2))
    half = len(distances)
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    theta = np.deg2rad(angle_degrees)
    # convolution kernel at -offset samples the image at +offset
    rows = half - distances * np.sin(theta)
    cols = half - distances * np.cos(theta)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        np.add.at(kernel, (r0 + dr, c0 + dc), weights * w)
    return (kernel / kernel.sum()).astype(np.float32)


def _convolve(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) with one square odd kernel for all (1, k, k) or one per image (N, k, k), via FFT."""
    h, w = x.shape[1:3]
    half = kernels.shape[-1] // 2
    padded = np.pad(x, ((0, 0), (half, half), (half, half), (0, 0)), mode="symmetric")
    # zeros appended up to a fast FFT length wrap only into the discarded border
    shape = (_fast_length(padded.shape[1]), _fast_length(padded.shape[2]))
    full = np.zeros((len(kernels), *shape), np.float32)
    full[:, :kernels.shape[1], :kernels.shape[2]] = kernels
    full = np.roll(full, (-half, -half), axis=(1, 2))
    spectrum = np.fft.rfft2(padded, s=shape, axes=(1, 2)) * np.fft.rfft2(full, axes=(1, 2))[..., None]
    out = np.fft.irfft2(spectrum, s=shape, axes=(1, 2))
    return out[:, half:half + h, half:half + w].astype(np.float32, copy=False)


def _fast_length(n: int) -> int:
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _zoom_blur(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    x = _to_float(images)
    factors = np.arange(1, *ZOOM_STOP_STEP[severity - 1])
    total = x.copy()
    for factor in factors:
        total += _zoom_about_centre(x, factor)
    return total / np.float32(len(factors) + 1)


def _zoom_about_centre(x: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear magnification by ``factor`` >= 1 about the centre, cropped back to (H, W)."""
    for axis in (1, 2):
        size = x.shape[axis]
        source = np.clip((np.arange(size) + 0.5 - size / 2) / factor + size / 2 - 0.5, 0, size - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, size - 1)
        weight = (source - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(4)])
        x = np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight
    return x


# ---- colour and contrast -----------------------------------------------------------------------------

def _rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(axis=-1)
    spread = value - x.min(axis=-1)
    saturation = np.divide(spread, value, out=np.zeros_like(value), where=value > 0)
    safe = np.where(spread > 0, spread, 1)
    hue = np.where(r == value, (g - b) / safe, np.where(g == value, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(spread > 0, (hue / 6) % 1, 0)  # achromatic pixels take hue 0 (red), the usual convention
    return hue.astype(np.float32), saturation, value


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    sector = np.floor(hue * 6)
    frac = hue * 6 - sector
    sector = sector.astype(int) % 6
    p = value * (1 - saturation)
    q = value * (1 - frac * saturation)
    t = value * (1 - (1 - frac) * saturation)
    channels = [(value, t, p, p, q, value), (t, value, value, q, p, p), (p, p, t, value, value, q)]
    return np.stack([np.choose(sector, choice) for choice in channels], axis=-1).astype(np.float32)


def _brightness(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    hue, saturation, value = _rgb_to_hsv(_to_float(images))
    return _hsv_to_rgb(hue, saturation, np.clip(value + np.float32(BRIGHTNESS_SHIFT[severity - 1]), 0, 1))


def _saturate(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    # as in ImageNet-C, severities 1-2 desaturate and 3-5 oversaturate; the offset at 4-5 gives grey
    # pixels (hue 0) a red tint
    scale, shift = SATURATE_SCALE_SHIFT[severity - 1]
    hue, saturation, value = _rgb_to_hsv(_to_float(images))
    return _hsv_to_rgb(hue, np.clip(saturation * np.float32(scale) + np.float32(shift), 0, 1), value)


def _contrast(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    x = _to_float(images)
    means = x.mean(axis=(1, 2), keepdims=True)  # per image and channel
    return (x - means) * np.float32(CONTRAST_FACTOR[severity - 1]) + means


def _fog(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    strength, decay = FOG_STRENGTH_DECAY[severity - 1]
    x = _to_float(images)
    haze = _fractal(streams, decay, *x.shape[1:3])[..., None]
    brightest = x.max(axis=(1, 2, 3), keepdims=True)
    # the published rescaling: adding the haze, then shrinking so the brightest pixel keeps its value
    return (x + np.float32(strength) * haze) * brightest / (brightest + np.float32(strength))


def _fractal(streams: Streams, decay: float, height: int, width: int) -> np.ndarray:
    """(N, height, width) smooth fractal noise on [0, 1], one map per stream.

    A square map of side S (a power of two covering the image) summed from octaves of value noise with
    2, 4, ..., S cells a side, each octave's amplitude the previous one's divided by ``decay``: the same
    spectrum as a diamond-square plasma fractal whose displacement is divided by ``decay`` per level.
    """
    side = 1 << max(1, int(np.ceil(np.log2(max(height, width)))))
    total = np.zeros((len(streams), height, width), np.float32)
    octave, amplitude = 0, 1.0
    while (cells := 2 << octave) <= side:
        grid = np.stack([rng.uniform(-1, 1, (cells + 1, cells + 1)) for rng in streams]).astype(np.float32)
        for axis, size in ((1, height), (2, width)):
            position = np.arange(size) * (cells / side)
            low = np.floor(position).astype(int)
            t = (position - low).astype(np.float32)
            t = (t * t * (3 - 2 * t)).reshape([-1 if a == axis else 1 for a in range(3)])  # smoothstep
            grid = np.take(grid, low, axis=axis) * (1 - t) + np.take(grid, low + 1, axis=axis) * t
        total += np.float32(amplitude) * grid
        octave, amplitude = octave + 1, amplitude / decay
    total -= total.min(axis=(1, 2), keepdims=True)
    peak = total.max(axis=(1, 2), keepdims=True)
    return total / np.where(peak > 0, peak, 1)


# ---- resampling and compression (on uint8, as Pillow does) -------------------------------------------

def _pixelate(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    factor = PIXELATE_FACTOR[severity - 1]
    height, width = images.shape[1:3]
    small = (max(1, int(width * factor)), max(1, int(height * factor)))
    return np.stack([np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BOX)
                                .resize((width, height), Image.Resampling.BOX)) for image in images])


def _jpeg_compression(images: np.ndarray, severity: int, streams: Streams) -> np.ndarray:
    quality = JPEG_QUALITY[severity - 1]
    out = np.empty_like(images)
    for k, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out[k] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


_CORRUPTORS: dict[str, Callable[[np.ndarray, int, Streams], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "brightness": _brightness, "contrast": _contrast, "fog": _fog, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression, "saturate": _saturate,
}
assert tuple(_CORRUPTORS) == CORRUPTIONS
