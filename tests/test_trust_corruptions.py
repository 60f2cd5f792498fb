"""Corruptions: severity 0 is the identity, every corruption is deterministic and grows with severity, and
the published ImageNet-C constants show up where they can be measured (noise sigma, contrast factor, JPEG
quality, fog's fading, blur widths scaled with the image size)."""

import io
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from pixelmine.errors import InputError
from pixelmine.trust.corruptions import (
    CONTRAST_FACTOR,
    CORRUPTIONS,
    FOG_STRENGTH_DECAY,
    GAUSSIAN_SIGMA,
    IMPULSE_AMOUNT,
    JPEG_QUALITY,
    SEVERITIES,
    corrupt,
    corrupt_one,
)

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog")
BLURS = ("defocus_blur", "motion_blur", "zoom_blur", "pixelate")


def photo(seed: int, height: int = 64, width: int = 80, low: int = 100, high: int = 200) -> np.ndarray:
    """A smooth random colour field with edges. Values in [low, high], so clipping stays out of the way and
    the HSV saturation stays below (high - low) / high."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(low, high + 1, (8, 8, 3), dtype=np.uint8)
    smooth = np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    return np.clip(smooth, low, high)  # bicubic overshoots


@pytest.fixture(scope="module")
def batch():
    return np.stack([photo(k) for k in range(4)])


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def hsv_saturation(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64)
    top = x.max(axis=-1)
    return np.where(top > 0, (top - x.min(axis=-1)) / np.where(top > 0, top, 1), 0)


def test_the_published_set_in_a_fixed_order():
    assert CORRUPTIONS[:5] == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur")
    assert len(set(CORRUPTIONS)) == len(CORRUPTIONS) == 12
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_an_identical_copy(name, batch):
    out = corrupt(batch, name, 0)
    assert out.tobytes() == batch.tobytes() and out.dtype == np.uint8
    assert out is not batch and not np.shares_memory(out, batch)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_and_changes_the_image_at_every_severity(name, batch):
    for severity in SEVERITIES:
        first = corrupt(batch, name, severity, seed=3)
        assert first.tobytes() == corrupt(batch, name, severity, seed=3).tobytes()
        assert first.shape == batch.shape and first.dtype == np.uint8
        for k in range(len(batch)):
            assert not np.array_equal(first[k], batch[k]), (name, severity, k)
    if name in RANDOM:
        assert not np.array_equal(corrupt(batch, name, 3, seed=3), corrupt(batch, name, 3, seed=4))


@pytest.mark.parametrize("name", RANDOM)
def test_each_image_draws_from_its_own_stream_by_index(name):
    # 40 images span several processing chunks: an image's result depends on its index, not on its neighbours
    images = np.stack([photo(k, 12, 10) for k in range(40)])
    others = images.copy()
    others[[0, 20, 39]] = photo(99, 12, 10)
    out, out_others = corrupt(images, name, 4), corrupt(others, name, 4)
    keep = [k for k in range(40) if k not in (0, 20, 39)]
    assert np.array_equal(out[keep], out_others[keep])
    assert np.array_equal(corrupt(images[:5], name, 4), out[:5])
    assert np.array_equal(corrupt_one(images[0], name, 4), out[0])


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in ("fog", "saturate")])
def test_damage_grows_with_severity(name, batch):
    damage = [mean_abs_change(corrupt(batch, name, s), batch) for s in SEVERITIES]
    assert all(b >= a for a, b in pairwise(damage)), damage
    assert damage[-1] > damage[0]


def test_saturate_moves_saturation_further_with_severity(batch):
    # The published (scale, shift) pairs desaturate at 1-2 (x0.3, x0.1) and oversaturate at 3-5 (x2, x5+.1,
    # x20+.2): pixel change need not be ordered, but |change in saturation| is, wherever saturation < 0.5
    # (here at most 0.5 by construction): 0.7 s < 0.9 s < s <= min(4 s + .1, 1 - s) <= min(19 s + .2, 1 - s).
    before = hsv_saturation(batch)
    assert before.max() <= 0.5
    moved = [np.abs(hsv_saturation(corrupt(batch, "saturate", s)) - before).mean() for s in SEVERITIES]
    assert all(b >= a for a, b in pairwise(moved)), moved
    assert hsv_saturation(corrupt(batch, "saturate", 2)).mean() < before.mean() < \
        hsv_saturation(corrupt(batch, "saturate", 3)).mean()


def test_fog_fades_the_image_by_the_published_strength():
    # Fog is x -> (x + strength * haze) * m / (m + strength), m the image's brightest value: the same haze
    # (same index and seed) on two images with m = 1 leaves their difference scaled by 1 / (1 + strength).
    # Severities 3 and 4 share strength 2.5 (they differ in haze roughness), so fading is non-increasing,
    # and a pixel-difference measure is not ordered (it mostly reflects the random haze).
    first, second = photo(1), photo(2)
    first[0, 0] = second[0, 0] = 255
    gains = []
    for severity, (strength, _) in zip(SEVERITIES, FOG_STRENGTH_DECAY):
        fogged = corrupt_one(first, "fog", severity).astype(float) - corrupt_one(second, "fog", severity)
        gain = np.sum(fogged * (first.astype(float) - second)) / np.sum((first.astype(float) - second) ** 2)
        assert gain == pytest.approx(1 / (1 + strength), abs=0.01)
        gains.append(gain)
    assert all(b <= a + 1e-3 for a, b in pairwise(gains)), gains


def test_fog_haze_is_a_full_range_fractal_rougher_at_higher_severity():
    # on a white image (m = 1) the haze is recoverable: haze = (out * (1 + strength) - 1) / strength
    white = np.full((96, 96, 3), 255, np.uint8)
    roughness = []
    for severity in (1, 5):
        strength = FOG_STRENGTH_DECAY[severity - 1][0]
        out = corrupt_one(white, "fog", severity)
        haze = (out[..., 0] / 255 * (1 + strength) - 1) / strength
        assert haze.min() == pytest.approx(0, abs=0.02) and haze.max() == pytest.approx(1, abs=0.02)
        assert (out[..., 0] == out[..., 1]).all()  # a grey haze
        roughness.append(np.abs(np.diff(haze, axis=1)).mean())
    assert roughness[1] > roughness[0]  # decay 1.4 keeps more fine detail than decay 2


def test_fog_never_brightens_past_the_brightest_pixel(batch):
    for severity in SEVERITIES:
        out = corrupt(batch, "fog", severity)
        assert (out.max(axis=(1, 2, 3)) <= batch.max(axis=(1, 2, 3))).all()


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("shape", [(28, 28), (37, 61), (61, 37), (1, 1)])
def test_shape_and_dtype_kept_for_tiny_non_square_and_grey_images(name, shape):
    colour = photo(5, *shape)
    grey = np.repeat(colour[..., :1], 3, axis=-1)
    for images in (colour[None], np.stack([grey, grey])):
        for severity in (1, 5):
            out = corrupt(images, name, severity)
            assert out.shape == images.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["defocus_blur", "motion_blur", "zoom_blur", "pixelate", "brightness",
                                  "contrast", "fog"])
def test_grey_images_stay_grey(name):
    grey = np.repeat(photo(6)[..., :1], 3, axis=-1)[None]
    for severity in SEVERITIES:
        out = corrupt(grey, name, severity).astype(int)
        assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 0] - out[..., 2]).max() <= 1


def test_saturate_tints_grey_red_at_the_top_severities_as_published():
    # the shift (0.1, 0.2) at severities 4-5 gives achromatic pixels (hue 0 by convention) saturation
    grey = np.full((1, 8, 8, 3), 200, np.uint8)
    assert np.array_equal(corrupt(grey, "saturate", 3), grey)
    red, green, blue = corrupt(grey, "saturate", 5)[0, 0, 0].astype(int)
    assert red == 200 and green == blue == round(200 * 0.8)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_gaussian_noise_has_the_published_sigma(severity):
    # mid-grey, 224 px: sigma <= 0.18 is under 3 sigma from either bound, so clipping barely matters
    grey = np.full((1, 224, 224, 3), 128, np.uint8)
    out = corrupt(grey, "gaussian_noise", severity) / 255
    assert out.std() == pytest.approx(GAUSSIAN_SIGMA[severity - 1], rel=0.02)
    assert out.mean() == pytest.approx(128 / 255, abs=0.005)


def test_shot_noise_keeps_the_mean_and_impulse_noise_flips_the_published_fraction():
    # Poisson counts / photons has the pixel's mean; a dark grey keeps clipping at 1 rare even at 3 photons
    dark = np.full((1, 224, 224, 3), 64, np.uint8)
    grey = np.full((1, 224, 224, 3), 128, np.uint8)
    for severity in SEVERITIES:
        assert corrupt(dark, "shot_noise", severity).mean() == pytest.approx(64, abs=1)
        out = corrupt(grey, "impulse_noise", severity)
        amount = IMPULSE_AMOUNT[severity - 1]
        assert (out == 255).mean() == pytest.approx(amount / 2, rel=0.08)
        assert (out == 0).mean() == pytest.approx(amount / 2, rel=0.08)
        assert ((out == 0) | (out == 255) | (out == 128)).all()


def test_brightness_raises_the_mean_value(batch):
    values = [corrupt(batch, "brightness", s).max(axis=-1).mean() for s in (0, *SEVERITIES)]
    assert all(b > a for a, b in pairwise(values)), values
    assert values[1] - values[0] == pytest.approx(0.1 * 255, abs=1)  # +0.1 on [0, 1], no clipping yet


def test_contrast_scales_the_spread_by_the_published_factor(batch):
    before = batch.astype(float).std(axis=(1, 2))
    for severity in SEVERITIES:
        after = corrupt(batch, "contrast", severity).astype(float).std(axis=(1, 2))
        assert after == pytest.approx(before * CONTRAST_FACTOR[severity - 1], abs=0.5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_is_a_pillow_round_trip_at_the_published_quality(severity, batch):
    out = corrupt(batch, "jpeg_compression", severity)
    for image, got in zip(batch, out):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1])
        assert np.array_equal(got, np.asarray(Image.open(buffer).convert("RGB")))


@pytest.mark.parametrize("name", BLURS)
@pytest.mark.parametrize("shape", [(224, 224), (40, 60), (28, 28)])
def test_blurring_a_flat_image_leaves_it_flat(name, shape):
    flat = np.full((2, *shape, 3), (37, 137, 237), np.uint8)
    for severity in SEVERITIES:
        assert np.array_equal(corrupt(flat, name, severity), flat), (name, severity)


def test_pixelate_makes_blocks_of_the_published_size():
    # factor 0.25 at 224 px: a 56 px grid, so 4 x 4 blocks of one colour
    out = corrupt(photo(7, 224, 224)[None], "pixelate", 5)[0]
    blocks = out.reshape(56, 4, 56, 4, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_blur_widths_scale_with_the_image_size():
    # a black/white step edge: the blurred transition is about 2 * radius wide, radius 10 px at 224 px
    # (severity 5), scaled by min(H, W) / 224
    widths = {}
    for size in (112, 224, 448):
        edge = np.zeros((1, size, size, 3), np.uint8)
        edge[:, :, size // 2:] = 255
        row = corrupt(edge, "defocus_blur", 5)[0, size // 2, :, 0]
        widths[size] = int(((row > 0) & (row < 255)).sum())
    assert 17 <= widths[224] <= 23
    assert widths[448] == pytest.approx(2 * widths[224], abs=2)
    assert widths[112] == pytest.approx(widths[224] / 2, abs=2)


def test_motion_blur_smears_a_dot_along_a_line():
    dot = np.zeros((1, 224, 224, 3), np.uint8)
    dot[0, 112, 112] = 255
    smear = corrupt(dot, "motion_blur", 1)[0, ..., 0]
    rows, cols = np.nonzero(smear)
    # severity 1 at 224 px: 21 taps, weights exp(-d^2 / 18): visible for about 8 px, one side of the dot
    assert 5 <= np.hypot(rows - 112, cols - 112).max() <= 12
    assert len(rows) < 40  # a thin line, not a disk


def test_unknown_name_lists_the_valid_names(batch):
    with pytest.raises(InputError) as err:
        corrupt(batch, "snow", 1)
    assert "snow" in str(err.value) and all(name in str(err.value) for name in CORRUPTIONS)


@pytest.mark.parametrize("severity", [6, -1, 2.5, True, "3"])
def test_severity_outside_0_to_5_is_refused(severity, batch):
    with pytest.raises(InputError, match="severity must be an integer 0..5"):
        corrupt(batch, "contrast", severity)


def test_numpy_integer_severity_and_seed_are_accepted(batch):
    assert np.array_equal(corrupt(batch, "fog", np.int64(2), seed=np.int32(1)), corrupt(batch, "fog", 2, seed=1))
    with pytest.raises(InputError, match="seed"):
        corrupt(batch, "fog", 2, seed=-1)


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((2, 8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8, 3), np.uint8), r"shape \(8, 8, 3\)"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"shape \(2, 8, 8, 4\)"),
    (np.zeros((2, 8, 8), np.uint8), r"shape \(2, 8, 8\)"),
    (np.zeros((2, 0, 8, 3), np.uint8), r"shape \(2, 0, 8, 3\)"),
    ([[[[0, 0, 0]]]], "numpy array"),
])
def test_bad_images_say_what_is_expected(bad, expected):
    with pytest.raises(InputError, match=expected) as err:
        corrupt(bad, "contrast", 1)
    assert r"uint8 (N, H, W, 3)" in str(err.value)


def test_corrupt_one_wants_one_image(batch):
    assert corrupt_one(batch[1], "contrast", 2).shape == batch[1].shape
    with pytest.raises(InputError, match=r"uint8 \(H, W, 3\)"):
        corrupt_one(batch, "contrast", 2)
    with pytest.raises(InputError, match="dtype float64"):
        corrupt_one(batch[0] / 255, "contrast", 2)
