"""The CLIP path of text search and zero-shot labels, end to end on a tiny randomly initialised open_clip
model (never a download): extraction through the normal cache, the faiss index, the text tower."""

from __future__ import annotations

import numpy as np
import pytest
from imagefactory import photo, save

import pixelmine

pytest.importorskip("open_clip")

TINY = "clip:pixelmine-tiny/random"


@pytest.fixture(scope="module")
def clip_workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    for k in range(12):
        save(photo(500 + k, (48, 40)), tmp / "images" / ("a" if k % 2 else "b") / f"p{k:02d}.jpg")
    ws = pixelmine.open_workspace(tmp / "ws")
    ws.ingest(tmp / "images", labels_from_folders=True, progress=False, workers=1)
    ws.extract(TINY, progress=False)
    yield ws
    ws.close()


def test_text_search_uses_cached_clip_features_and_equals_brute_force(clip_workspace):
    from pixelmine.backbones.clip import clip_text_encoder

    ws = clip_workspace
    result = ws.search_text("a photo of a red square", k=12)
    assert result.method == "clip" and result.backbone == TINY and len(result.hits) == 12
    features = ws.features(TINY)
    images = features.vectors / np.linalg.norm(features.vectors, axis=1, keepdims=True)
    with clip_text_encoder(TINY, root=ws.root) as encoder:
        text = encoder.encode(["a photo of a red square"])[0]
    reference = images @ text
    order = np.argsort(-reference, kind="stable")
    assert [h.image_id for h in result.hits] == [features.ids[i] for i in order]
    assert np.allclose([h.score for h in result.hits], reference[order], atol=1e-5)


def test_an_images_own_embedding_ranks_it_first(clip_workspace):
    ws = clip_workspace
    target = ws.images()[3]
    neighbours = ws.similar(target["id"], k=3, backbone=TINY)
    assert neighbours[0].image_id == target["id"] and neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_zero_shot_with_clip_gives_softmax_probabilities_and_measures_them(clip_workspace):
    ws = clip_workspace
    result = ws.zero_shot("a, b", backbone=TINY)
    assert result.method == "clip" and result.probs.shape == (12, 2)
    assert np.allclose(result.probs.sum(axis=1), 1.0)
    assert result.evaluation is not None and result.evaluation.n == 12
    assert result.concepts == {}  # CLIP reads any words; no ImageNet concept check
    again = ws.zero_shot(["a", "b"], backbone=TINY)
    assert np.allclose(again.probs, result.probs)  # deterministic


def test_clusters_of_clip_features_are_described_in_words(clip_workspace):
    pytest.importorskip("sklearn")
    ws = clip_workspace
    ws.discover_clusters(backbone=TINY, map_method="pca")
    clusters = ws.clusters()["clusters"]
    assert all(len(c["words"]) == 3 and all(isinstance(w, str) for w, _ in c["words"]) for c in clusters)
    assert all(not c["tags"] for c in clusters)  # CLIP has no ImageNet tags: the words are CLIP's
