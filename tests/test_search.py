"""Similarity search: the image itself first, then its planted twin; the index follows the features."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from learnkit import BACKBONE, FINGERPRINT, labelled_workspace

from pixelmine.errors import InputError
from pixelmine.features import FeatureStore
from pixelmine.search import VectorIndex, index_dir


def twins(n: int = 200, dim: int = 24, seed: int = 0):
    """Vectors where row 2i+1 is a slightly perturbed copy of row 2i (its planted nearest neighbour)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 2, dim)).astype(np.float32)
    vectors = np.empty((n, dim), np.float32)
    vectors[0::2] = base
    vectors[1::2] = base + 0.05 * rng.normal(size=base.shape)
    return [f"{i:064x}" for i in range(n)], vectors


def test_index_returns_self_then_planted_twin():
    ids, vectors = twins()
    index = VectorIndex(ids, vectors * 7.0)  # scale must not matter: cosine
    found, scores = index.search(vectors, k=2)
    for row, neighbours in enumerate(found):
        assert neighbours[0] == ids[row]
        assert neighbours[1] == ids[row ^ 1]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5) and (scores[:, 1] > 0.95).all()
    with pytest.raises(InputError, match="query vectors have 3 dimensions; this index holds 24-d"):
        index.search(np.zeros((1, 3)), k=1)


def test_index_is_saved_and_rebuilt_when_features_change(tmp_path):
    ws, ids, labels, vectors = labelled_workspace(tmp_path, {"a": 6, "b": 6})
    first = VectorIndex.for_features(ws.root, ws.features(BACKBONE))
    directory = index_dir(ws.root, BACKBONE, FINGERPRINT)
    assert (directory / "vectors.faiss").exists() and len(first) == 12
    again = VectorIndex.for_features(ws.root, ws.features(BACKBONE))
    assert again.stamp == first.stamp and again.ids == first.ids
    # drop one image's vector: the stamp changes and the index is rebuilt with 11 vectors
    store = FeatureStore(ws.root, BACKBONE, FINGERPRINT)
    for shard in store.dir.glob("shard-*.npz"):
        shard.unlink()
    for name in ("matrix.npy", "ids.npy", "matrix.stamp"):
        (store.dir / name).unlink(missing_ok=True)
    store.write(ids[:11], vectors[:11])
    rebuilt = VectorIndex.for_features(ws.root, ws.features(BACKBONE))
    assert len(rebuilt) == 11 and rebuilt.stamp != first.stamp


def test_workspace_similar_by_prefix_path_and_copied_file(tmp_path):
    ws, ids, labels, vectors = labelled_workspace(tmp_path, {"a": 10, "b": 10}, separation=10.0)
    rows = {r["id"]: r for r in ws.images()}
    # plant a twin: image 1's vector becomes a near-copy of image 0's
    planted = vectors.copy()
    planted[1] = planted[0] + 0.01
    store = FeatureStore(ws.root, BACKBONE, FINGERPRINT)
    shutil.rmtree(store.dir)
    store.write(ids, planted)
    neighbours = ws.similar(ids[0][:10], k=3, backbone=BACKBONE)
    assert [n.rank for n in neighbours] == [1, 2, 3]
    assert neighbours[0].image_id == ids[0] and neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert neighbours[1].image_id == ids[1]
    assert neighbours[0].label == rows[ids[0]]["label"] and neighbours[0].path == rows[ids[0]]["path"]
    assert neighbours[2].label == labels[0]  # after the planted twin: the nearest of its own class blob
    by_path = ws.similar(rows[ids[1]]["path"], k=2, backbone=BACKBONE)
    assert [n.image_id for n in by_path] == [ids[1], ids[0]]
    copy = shutil.copy(rows[ids[0]]["path"], tmp_path / "copy-elsewhere.jpg")  # same bytes, uncatalogued path
    assert ws.similar(str(copy), k=1, backbone=BACKBONE)[0].image_id == ids[0]


def test_unknown_and_ambiguous_queries_say_what_to_give(tmp_path):
    ws, ids, _, _ = labelled_workspace(tmp_path, {"a": 4})
    with pytest.raises(InputError, match="neither a file nor a catalogued image id"):
        ws.similar("no-such-file.jpg", backbone=BACKBONE)
    with ws.catalog.transaction() as conn:  # two catalogued ids sharing the prefix abcd
        for fake in ("abcd" + "0" * 60, "abcd" + "1" * 60):
            conn.execute("INSERT INTO images(id, size, status, first_seen, updated_at) VALUES (?, 1, 'ok', '', '')",
                         (fake,))
    with pytest.raises(InputError, match="prefix 'abcd' matches 2 images .*give more characters"):
        ws.similar("abcd", backbone=BACKBONE)
    with pytest.raises(InputError, match="'k' parameter must be at least 1"):
        ws.similar(ids[0], k=0, backbone=BACKBONE)


@pytest.mark.slow  # real extraction (tiny_test backbone, ONNX export): ~25 s on a loaded 2-core machine
def test_new_file_is_embedded_like_the_cached_features(tmp_path):
    from learnkit import image_folders
    from PIL import Image

    import pixelmine

    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(image_folders(tmp_path / "images", {"a": 5, "b": 5}), labels_from_folders=True, progress=False,
              workers=1)
    ws.extract("tiny_test", progress=False)
    row = ws.images()[3]
    fresh = tmp_path / "query.png"  # the same pixels in new bytes: not in the catalog, so it is embedded
    with Image.open(row["path"]) as image:
        image.save(fresh)
    neighbours = ws.similar(str(fresh), k=3, backbone="tiny_test")
    assert neighbours[0].image_id == row["id"] and neighbours[0].similarity > 0.999
    assert neighbours[1].similarity < neighbours[0].similarity
