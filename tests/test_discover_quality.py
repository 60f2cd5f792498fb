"""Quality finders on synthetic images with planted blur, darkness, brightness, greyscale and odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pixelmine.discover import pixel_stats, quality
from pixelmine.errors import InputError


def textured(seed: int, size=(160, 120)) -> Image.Image:
    """A colour photo stand-in with fine detail: smooth colour field plus pixel-level texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray(rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 25, size=(h, w, 1))
    pixels = np.clip(np.asarray(base, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """40 normal images plus one planted problem each; returns (ids, paths, sizes, planted {kind: id})."""
    tmp = tmp_path_factory.mktemp("quality")
    images = {f"n{i:02d}": textured(i) for i in range(40)}
    images["blurry"] = textured(100).filter(ImageFilter.GaussianBlur(4))
    images["dark"] = Image.fromarray((np.asarray(textured(101)) * 0.12).astype(np.uint8))
    images["bright"] = Image.fromarray((255 - (255 - np.asarray(textured(102, size=(160, 120)))) * 0.1).astype(np.uint8))
    images["grey"] = textured(103).convert("L")
    images["flat"] = Image.new("RGB", (160, 120), (90, 120, 150))
    images["strip"] = textured(104, size=(480, 40))
    images["huge"] = textured(105, size=(640, 480))
    ids, paths, widths, heights = [], [], [], []
    for name, image in images.items():
        path = tmp / f"{name}.png"
        image.save(path)
        ids.append(name)
        paths.append(str(path))
        widths.append(image.width)
        heights.append(image.height)
    cache = tmp / "cache.npz"
    stats = pixel_stats.pixel_stats(cache, ids, paths, workers=1).stats
    return ids, paths, widths, heights, stats, cache


def test_each_planted_problem_is_flagged_and_nothing_else(collection):
    ids, _, widths, heights, stats, _ = collection
    found = quality.find_quality_issues(ids, stats, widths, heights)
    flagged = {(f.kind, f.image_id) for f in found if f.is_issue}
    expected = {("blurry", "blurry"), ("dark", "dark"), ("bright", "bright"), ("greyscale", "grey"),
                ("low_information", "flat"), ("odd_aspect_ratio", "strip"), ("odd_size", "huge")}
    assert expected <= flagged
    normal = {(kind, image_id) for kind, image_id in flagged if image_id.startswith("n")}
    assert not normal, normal
    for f in found:
        assert 0.0 <= f.score <= 1.0 and (f.score < 0.5) == f.is_issue or f.kind == "greyscale"
        assert "threshold" in f.details and "median" in f.details["threshold"] or f.kind == "greyscale"


def test_stats_are_cached_by_id(collection, monkeypatch):
    ids, paths, _, _, stats, cache = collection
    monkeypatch.setattr(pixel_stats, "_stats_of_path", lambda path: pytest.fail(f"recomputed {path}"))
    again = pixel_stats.pixel_stats(cache, ids, paths, workers=1)
    assert np.array_equal(again.stats, stats) and again.decoded.all()


def test_unreadable_file_gives_nan_and_is_not_cached(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    data = pixel_stats.pixel_stats(tmp_path / "c.npz", ["x"], [str(bad)], workers=1)
    assert np.isnan(data.stats).all() and not data.decoded.any()
    assert not (tmp_path / "c.npz").exists() or "x" not in np.load(tmp_path / "c.npz")["ids"].tolist()


def test_exif_orientation_is_applied(tmp_path):
    image = textured(7, size=(200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 200x100, shown 100x200
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert pixel_stats._open_small(str(path)).size == (100, 200)


def test_an_all_grey_collection_flags_no_greyscale(collection):
    ids, _, widths, heights, stats, _ = collection
    grey = stats.copy()
    grey[:, 3] = 0.0
    found = quality.find_quality_issues(ids, grey, widths, heights, only={"greyscale"})
    assert found and not any(f.is_issue for f in found)


def test_quality_bad_input():
    with pytest.raises(InputError, match=r"stats must have shape \(2, 4\)"):
        quality.find_quality_issues(["a", "b"], np.zeros((2, 3)), [1, 1], [1, 1])
    with pytest.raises(InputError, match="one entry per image"):
        quality.find_quality_issues(["a", "b"], np.zeros((2, 4)), [1], [1, 1])
    with pytest.raises(InputError, match="z_threshold must be > 0"):
        quality.find_quality_issues(["a", "b"], np.zeros((2, 4)), [1, 1], [1, 1], z_threshold=-1)


def test_view_hashes_link_flipped_and_cropped_copies(tmp_path):
    from PIL import ImageOps

    from pixelmine.discover import copy_links, duplicates
    from pixelmine.discover.views import view_lows

    originals = [textured(200 + k, size=(200, 160)) for k in range(12)]
    copies = [ImageOps.mirror(originals[0]), originals[1].crop((20, 8, 180, 136)),
              ImageOps.mirror(originals[2].crop((0, 30, 160, 158)))]
    images = originals + copies
    data = [pixel_stats._measure(image) for image in images]
    views = np.array([d[1] for d in data])
    coefficients = np.array([d[2] for d in data])

    def crop_views(rows, which):
        return np.array([view_lows(pixel_stats._grey(images[r])[1])[v].ravel()[1:] for r, v in zip(rows, which)])

    links = copy_links.copy_links(len(images), coefficients=coefficients, views=views, view_coefficients=crop_views)
    pairs = {(int(a), int(b)): m for a, b, m in zip(links.a, links.b, links.match)}
    assert pairs == {(0, 12): "mirror", (1, 13): "crop", (2, 14): "crop"}  # and no unrelated pair
    found = duplicates.find_near_duplicates([f"i{k:02d}" for k in range(len(images))], view_hashes=views,
                                            coefficients=coefficients, view_coefficients=crop_views)
    mirrored = {f.image_id: f for f in found}["i12"]
    assert mirrored.details["match"] == "mirror" and mirrored.details["agreement"] > 0.999 and mirrored.score < 0.001


def test_process_pool_gives_the_same_numbers(collection, tmp_path):
    ids, paths, _, _, stats, _ = collection
    pooled = pixel_stats.pixel_stats(tmp_path / "pool.npz", ids, paths, workers=2, chunk=20)
    assert np.array_equal(pooled.stats, stats) and pooled.decoded.all()
