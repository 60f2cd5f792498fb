"""Near-duplicates that stay copies: views and coefficients, the two-signal rule in a crowded collection,
no chaining, and the suggested keeper on planted degradations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from learnkit import BACKBONE, FINGERPRINT
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

import pixelmine
from pixelmine.discover import copy_links, duplicates, pixel_stats
from pixelmine.discover.encoding import LOSSLESS, encoding_quality, jpeg_quality
from pixelmine.discover.views import mirrored, view_lows
from pixelmine.features import FeatureStore


def _photo(seed: int, size=(160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray(rng.integers(30, 226, size=(5, 5, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 18, size=(h, w, 1))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def _silhouette(seed: int) -> Image.Image:
    """A white garment-like shape on black, 28 x 28: the shapes differ in detail, not in outline — a crowded
    hash space, like Fashion-MNIST's products."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    top, bottom = 3 + rng.integers(0, 3), 24 + rng.integers(0, 3)
    left, right = 6 + rng.integers(0, 3), 21 + rng.integers(0, 3)
    draw.rectangle((left, top, right, bottom), fill=int(rng.integers(150, 255)))
    for _ in range(int(rng.integers(2, 5))):  # stripes, pockets, prints: what tells two products apart
        y = int(rng.integers(top, bottom - 2))
        x0 = int(rng.integers(left, right - 4))
        draw.rectangle((x0, y, x0 + int(rng.integers(3, 10)), y + int(rng.integers(1, 4))),
                       fill=int(rng.integers(0, 120)))
    return image.convert("RGB")


def _decoded(image: Image.Image, fmt: str = "PNG", **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


# -- views and encoding -----------------------------------------------------------------------------
def test_mirror_and_crop_views_equal_the_views_of_the_flipped_and_cropped_pixels():
    grey = np.asarray(_photo(1).convert("L"), dtype=np.float64)
    lows = view_lows(grey)
    flipped = view_lows(grey[:, ::-1])
    assert np.allclose(lows[1], flipped[0], atol=1e-6)  # mirroring needs no arithmetic: signs flip
    assert np.allclose(mirrored(lows[0].ravel()[1:]), flipped[0].ravel()[1:], atol=1e-6)
    h, w = grey.shape
    ch, cw = round(h * 0.8), round(w * 0.8)
    y0, x0 = min(round(0.2 * h), h - ch), min(round(0.2 * w), w - cw)
    window = view_lows(grey[y0:y0 + ch, x0:x0 + cw])
    assert np.allclose(lows[-2], window[0], atol=1e-6)  # the last window: offsets 20 %, 20 %


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_read_from_the_quantisation_tables(quality):
    image = _decoded(_photo(2), "JPEG", quality=quality)
    assert abs(encoding_quality(image) - quality) <= 1


def test_lossless_and_unknown_encodings():
    assert encoding_quality(_decoded(_photo(3), "PNG")) == LOSSLESS
    assert np.isnan(encoding_quality(_decoded(_photo(3).convert("P"), "PNG")))  # a palette lost colours
    assert np.isnan(encoding_quality(_decoded(_photo(3), "GIF")))
    assert np.isnan(jpeg_quality([0] * 64)) and np.isnan(jpeg_quality([1] * 10))


# -- crowded collections ----------------------------------------------------------------------------
def _copies(image: Image.Image, k: int) -> Image.Image:
    kind = k % 5
    if kind == 0:
        return _decoded(image.resize((18, 18), Image.Resampling.BILINEAR))
    if kind == 1:
        return _decoded(image, "JPEG", quality=30)
    if kind == 2:
        return _decoded(image.crop((2, 3, 24, 25)))  # 80 % of each side
    if kind == 3:
        return _decoded(ImageOps.mirror(image))
    return _decoded(ImageEnhance.Brightness(image).enhance(0.8))


def test_a_crowded_collection_of_silhouettes_links_only_the_planted_copies():
    originals = [_silhouette(seed) for seed in range(600)]
    sources = list(range(0, 600, 20))  # 30 planted copies, 6 of each transform
    images = originals + [_copies(originals[s], k) for k, s in enumerate(sources)]
    data = [pixel_stats._measure(image) for image in images]
    views = np.array([d[1] for d in data])
    coefficients = np.array([d[2] for d in data])
    own = views[:, 0]

    def crop_views(rows, which):
        return np.array([view_lows(pixel_stats._grey(images[r])[1])[v].ravel()[1:] for r, v in zip(rows, which)])

    truth = {(s, 600 + k) for k, s in enumerate(sources)}
    plain = {tuple(p) for p in copy_links.phash_pairs(own, np.ones(len(own), bool), 8).tolist()}
    assert len(plain - truth) > 10 * len(truth)  # the trap: 8 pHash bits link thousands of different products

    links = copy_links.copy_links(len(images), coefficients=coefficients, views=views, view_coefficients=crop_views,
                                  phash_codes_valid=(own, np.ones(len(own), bool)))
    assert len(set(zip(links.a.tolist(), links.b.tolist())) - truth) <= 15  # unrelated products stay unrelated
    # what a user sees: groups around keepers (originals first: the larger resolution)
    groups = duplicates.star_groups(len(images), links.a, links.b, np.arange(len(images)))
    found = {(min(keeper, m), max(keeper, m)) for keeper, members in groups for m in members if m != keeper}
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / max(1, len(found))
    assert recall >= 0.9 and precision >= 0.9, (recall, precision, sorted(truth - found), sorted(found - truth))
    assert max(len(m) for _, m in groups) <= 3


def test_hash_radius_shrinks_where_the_hash_space_is_crowded():
    rng = np.random.default_rng(0)
    sparse = rng.integers(0, 2**63, size=3000, dtype=np.int64).astype(np.uint64)
    crowded = (sparse & np.uint64(0xFF)) | np.uint64(0xABCDEF0123456700)  # 56 bits the same in every code
    ok = np.ones(3000, bool)
    assert copy_links.hash_radius(sparse, ok, 8) == 8
    assert copy_links.hash_radius(crowded, ok, 8, max_candidates=100_000) < 8


# -- the keeper ---------------------------------------------------------------------------------------
def test_the_keeper_is_the_original_over_its_degraded_copies(tmp_path):
    """Originals come in first at JPEG q90; later arrive a q30 re-encode, a brightened and a blurred copy saved
    with the original's own tables (so the encoding ties and the first-seen original wins), a half-size copy
    and a lossless PNG of a shrunk copy. Sharpness would pick the q30 and the brightened copies."""
    source = tmp_path / "images"
    (source / "photos").mkdir(parents=True)
    originals = {}
    for k in range(8):
        path = source / "photos" / f"photo_{k}.jpg"
        _photo(100 + k, size=(192, 144)).save(path, quality=90)
        originals[k] = path
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    copies = {}
    for k in range(6):
        with Image.open(originals[k]) as original:
            tables = original.quantization
            image = original.convert("RGB")
        name = source / "photos" / f"copy_{k}.jpg"
        if k == 0:
            image.save(name, quality=30)
        elif k == 1:
            ImageEnhance.Brightness(image).enhance(1.2).save(name, qtables=tables)
        elif k == 2:
            image.filter(ImageFilter.GaussianBlur(1.5)).save(name, qtables=tables)
        elif k == 3:
            image.resize((96, 72), Image.Resampling.LANCZOS).save(name, qtables=tables)
        elif k == 4:
            ImageOps.mirror(image).save(name, qtables=tables)
        else:
            name = name.with_suffix(".png")
            image.resize((160, 120), Image.Resampling.LANCZOS).save(name)
        copies[k] = name
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    rows = ws.images(status="ok")
    by_path = {r["path"]: r["id"] for r in rows}
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write([r["id"] for r in rows],
                                                        np.random.default_rng(0).standard_normal((len(rows), 8)))
    ws.discover(only="duplicates", backbone=BACKBONE, progress=False, workers=1)
    near = {f.image_id: f.details for f in ws.findings("near_duplicate")}
    for k, copy in copies.items():
        original, duplicate = by_path[str(originals[k])], by_path[str(copy)]
        assert near[duplicate]["keeper"] == original, (k, near.get(duplicate))
        assert sorted(near[original]["members"]) == sorted([original, duplicate])
    assert set(near) == {by_path[str(p)] for p in list(originals.values())[:6] + list(copies.values())}
    assert near[by_path[str(copies[0])]]["keeper_because"].startswith("the best encoding, JPEG quality 90")
    assert near[by_path[str(copies[1])]]["keeper_because"].endswith("seen first")
    ws.close()
