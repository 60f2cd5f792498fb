"""Fault tests: damaged workspace files heal or say so. Derived files (feature shards and their consolidated
copy, thumbnails, the pixel-statistics cache, a cached ONNX graph) are set aside or recomputed with a
warning; irreplaceable ones (the catalog, a model's model.json) give an error naming the file and the fix,
and are left untouched."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from imagefactory import photo, save

import pixelmine
from pixelmine.errors import InputError, WorkspaceError

pytestmark = pytest.mark.fault


@pytest.fixture
def extracted(tmp_path):
    for k in range(40):
        save(photo(k, (64, 48)), tmp_path / "images" / ("a" if k % 2 else "b") / f"p{k:03d}.jpg")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(tmp_path / "images", labels_from_folders=True, progress=False, workers=1)
    ws.extract("tiny_test", progress=False, flush_s=1e-9, batch_size=8, workers=0)  # 5 shards of 8
    features = ws.features("tiny_test")
    reference = {i: np.array(features.vectors[r]) for r, i in enumerate(features.ids)}  # copies, not the map
    del features
    return ws, reference


def _equal(ws, reference) -> None:
    features = ws.features("tiny_test")
    assert sorted(features.ids) == sorted(reference)
    for row, image_id in enumerate(features.ids):
        np.testing.assert_allclose(features.vectors[row], reference[image_id], rtol=1e-6)


def test_a_truncated_shard_is_set_aside_and_its_images_recomputed(extracted, caplog):
    ws, reference = extracted
    shards = sorted((ws.root / "features").glob("*/shard-*.npz"))
    assert len(shards) == 5
    shards[2].write_bytes(shards[2].read_bytes()[:300])  # cut off, as by a full disk or a bad copy
    with caplog.at_level(logging.WARNING):
        partial = ws.features("tiny_test")
    assert len(partial) == 32 and "is damaged" in caplog.text and "pixelmine extract" in caplog.text
    assert shards[2].with_name(shards[2].name + ".damaged").exists() and not shards[2].exists()
    again = ws.extract("tiny_test", progress=False)
    assert again.computed == 8 and again.cached == 32  # exactly the lost images, nothing else
    _equal(ws, reference)


def test_a_damaged_consolidated_copy_is_rebuilt(extracted, caplog):
    ws, reference = extracted
    matrix = next((ws.root / "features").glob("*/matrix.npy"))
    matrix.unlink()  # a new file in its place (truncating the mapped one in place would fault the mapping)
    matrix.write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level(logging.WARNING):
        _equal(ws, reference)
    assert "rebuilding them from the shards" in caplog.text


def test_a_damaged_thumbnail_is_made_again(extracted):
    from pixelmine.thumbnails import thumbnail_path

    ws, _ = extracted
    image_id = ws.images()[0]["id"]
    path = thumbnail_path(ws, image_id, 128)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert thumbnail_path(ws, image_id, 128).read_bytes() == whole


def test_a_damaged_pixel_stats_cache_is_recomputed(extracted, caplog):
    ws, _ = extracted
    first = ws.discover(backbone="tiny_test", only=["quality"], progress=False)
    cache = ws.root / "discover" / "pixel-stats.npz"
    cache.write_bytes(b"PK\x03\x04 not a whole archive")
    with caplog.at_level(logging.WARNING):
        second = ws.discover(backbone="tiny_test", only=["quality"], progress=False)
    assert "recomputing" in caplog.text and second.counts == first.counts


def test_a_damaged_model_file_names_the_file_and_the_fix(tmp_path):
    from learnkit import FAST, labelled_workspace

    ws, *_ = labelled_workspace(tmp_path, {"a": 8, "b": 8})
    model = ws.train("logreg", progress=False, **FAST)
    info = model.dir / "model.json"
    info.write_text('{"name": "logreg-tiny", "kin')
    with pytest.raises(InputError, match=r"the model file '.*model\.json' is damaged.*pixelmine train --name"):
        ws.model(model.name)


def test_a_damaged_catalog_is_refused_and_left_untouched(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    catalog = root / "catalog.sqlite"
    catalog.write_bytes(b"this is not a database " * 200)
    before = hashlib.sha256(catalog.read_bytes()).hexdigest()
    with pytest.raises(WorkspaceError, match=r"the catalog '.*catalog\.sqlite' is damaged.*restore it from a backup"):
        pixelmine.open_workspace(root).status()
    assert hashlib.sha256(catalog.read_bytes()).hexdigest() == before


def test_a_damaged_vector_index_is_built_again(extracted, caplog):
    ws, _ = extracted
    first = ws.images()[0]
    assert ws.similar(first["path"], k=3, backbone="tiny_test")[0].image_id == first["id"]
    index = next((ws.root / "index").glob("*/vectors.faiss"))
    index.write_bytes(index.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = ws.similar(first["path"], k=3, backbone="tiny_test")
    assert again[0].image_id == first["id"] and "is damaged" in caplog.text
