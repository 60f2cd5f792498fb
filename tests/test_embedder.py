"""The one embedder: the same outputs through ONNX Runtime and PyTorch, the feature map on request (an
extra output of the exported graph), bad files as errors, and the per-user graph cache."""

from __future__ import annotations

import numpy as np
import pytest
from imagefactory import photo, save

from pixelmine.errors import InputError
from pixelmine.features.embedder import Embedder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    paths = [save(photo(k, (90 + 7 * k, 70)), root / f"p{k}.jpg") for k in range(5)]
    broken = root / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    return paths, broken


@pytest.mark.parametrize("backbone, map_shape", [("tiny_test", (16, 8, 8)), ("mobilenet_v2", (1280, 7, 7))])
def test_feature_map_is_the_map_the_features_pool(files, backbone, map_shape):
    paths, broken = files
    with Embedder.open(backbone) as onnx, Embedder.open(backbone, backend="torch") as eager:
        assert onnx.has_map and eager.has_map
        a = onnx.embed_files([*paths[:2], broken, *paths[2:]], with_map=True)
        b = eager.embed_files(paths, with_map=True)
    assert a.rows == [0, 1, 3, 4, 5] and list(a.errors) == [2] and "could not decode" in a.errors[2]
    assert a.feature_map.shape == (5, *map_shape) and a.features.shape == (5, map_shape[0])
    # global average pooling of the map gives the pooled features: the map is the network's own
    np.testing.assert_allclose(a.feature_map.mean(axis=(2, 3)), a.features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a.feature_map, b.feature_map, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-3, atol=1e-3)


def test_without_the_map_nothing_changes(files):
    paths, _ = files
    with Embedder.open("tiny_test") as embedder:
        plain = embedder.embed_files(paths)
        mapped = embedder.embed_files(paths, with_map=True)
    assert plain.feature_map is None
    np.testing.assert_array_equal(plain.features, mapped.features)


def test_large_jobs_go_through_the_process_pool_with_the_same_numbers(files, tmp_path):
    paths, broken = files
    many = [paths[k % len(paths)] for k in range(70)] + [broken]  # above SMALL_JOB: decode processes
    with Embedder.open("tiny_test") as embedder:
        pooled = embedder.embed_files(many, batch_size=16)
        alone = embedder.embed_files(paths)
    assert pooled.rows == list(range(70)) and list(pooled.errors) == [70]
    np.testing.assert_allclose(pooled.features[:5], alone.features, rtol=1e-6)


def test_a_fingerprint_the_weights_cannot_reproduce_is_refused():
    with pytest.raises(InputError, match="gives other features"):
        Embedder.open("tiny_test", fingerprint="0" * 64)


def test_vision_transformers_have_no_map():
    from pixelmine.backbones.model import _is_convolutional

    torch = pytest.importorskip("torch")

    class Tokens(torch.nn.Module):
        pretrained_cfg = {"input_size": (3, 8, 8)}

        def forward_features(self, x):
            return torch.zeros(x.shape[0], 4, 16)

    assert not _is_convolutional(Tokens())
