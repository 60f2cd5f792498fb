"""``clip:ARCH/PRETRAINED``: the open_clip image tower as a backbone, its text encoder, offline weights.

Everything runs on the tiny random architecture ``clip:pixelmine-tiny/random`` (never a download); the
real architectures appear only as specs and as missing-weights errors against empty caches."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from imagefactory import photo, save

import pixelmine
from pixelmine import backbones
from pixelmine.errors import InputError, SourceNotFoundError, WeightsNotFoundError

open_clip = pytest.importorskip("open_clip")

from pixelmine.backbones import clip  # noqa: E402  (needs open_clip for anything beyond names)
from pixelmine.backbones.clip import clip_text_encoder, is_clip  # noqa: E402

TINY = f"clip:{clip.TINY_ARCH}/random"
DIM = clip.TINY_CLIP_CONFIG["embed_dim"]
TEXTS = ["a photo of a red square", "a blue sky", "a green field", "a photo of a red square"]


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every cache open_clip or pixelmine could find CLIP weights in points at an empty folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setattr(clip, "OPEN_CLIP_URL_CACHE", tmp_path / "clip-cache")
    return tmp_path


@pytest.fixture
def fresh_log(monkeypatch):
    """Spec messages are logged once per process; forget which were, so this test sees them."""
    monkeypatch.setattr(clip, "_logged", set())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small real workspace (two folders of distinct photos) with the tiny CLIP's features extracted."""
    root = tmp_path_factory.mktemp("clip-ws")
    for label, seeds in (("reds", range(0, 6)), ("blues", range(6, 12))):
        for seed in seeds:
            save(photo(seed, (48, 40)), root / "images" / label / f"{label}_{seed}.jpg")
    ws = pixelmine.open_workspace(root / "ws")
    ws.ingest(root / "images", labels_from_folders=True, progress=False, workers=1)
    started = time.perf_counter()
    result = ws.extract(TINY, progress=False, workers=0)
    return ws, result, time.perf_counter() - started


# -- names and specs ------------------------------------------------------------------------------
def test_names_are_recognised_and_the_spec_needs_no_weights():
    assert is_clip(TINY) and is_clip("clip:ViT-B-32/laion2b_s34b_b79k")
    assert not is_clip("mobilenet_v2") and not is_clip("timm:vit_small_patch16_224") and not is_clip(None)
    spec = backbones.get(TINY)
    assert spec.name == TINY and spec.feature_dim == DIM and spec.source == "open_clip"
    assert spec.num_classes == 0 and spec.label_names() == []  # no classifier: no tags
    assert spec.locate_weights().origin == "random"
    # tags are normalised the way open_clip does it, so both spellings are one backbone (one cache)
    assert backbones.get("clip:ViT-B-32/LAION2B-s34b-b79k").name == "clip:ViT-B-32/laion2b_s34b_b79k"


def test_tiny_preprocessing_comes_from_its_config_and_the_defaults_are_logged(caplog, fresh_log):
    caplog.set_level(logging.INFO, logger="pixelmine.backbones.clip")
    pre = backbones.get(TINY).preprocessing
    size = clip.TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
    assert (pre.input_size, pre.resize) == (size, size)  # open_clip: shortest side to size, centre crop
    assert pre.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN) and pre.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert pre.interpolation == "bicubic"
    assert "random initialisation sets no preprocessing; using open_clip's defaults" in caplog.text
    assert "its features and text embeddings mean nothing" in caplog.text


def test_pretrained_preprocessing_comes_from_the_tag_config(caplog, fresh_log):
    caplog.set_level(logging.INFO, logger="pixelmine.backbones.clip")
    vit = backbones.get("clip:ViT-B-32/laion2b_s34b_b79k").preprocessing
    assert (vit.input_size, vit.resize, vit.interpolation) == (224, 224, "bicubic")
    assert vit.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    siglip = backbones.get("clip:ViT-B-16-SigLIP/webli").preprocessing
    assert siglip.mean == (0.5, 0.5, 0.5) and siglip.std == (0.5, 0.5, 0.5)
    assert "resize mode 'squash'" in caplog.text  # pixelmine centre-crops instead, and says so
    assert backbones.get("clip:ViT-B-32/openai").quick_gelu  # OpenAI's weights need QuickGELU; open_clip only warns


@pytest.mark.parametrize("name, message", [
    ("clip:ViT-B-23/openai", r"open_clip has no architecture 'ViT-B-23'.*did you mean: ViT-B-32"),
    ("clip:ViT-B-32/laion2b", r"no pretrained weights 'laion2b' for ViT-B-32.*did you mean: .*laion2b_s34b_b79k"),
    (f"clip:{clip.TINY_ARCH}/openai", r"it has no pretrained tags in open_clip.*clip:pixelmine-tiny/random"),
    ("clip:ViT-B-32", r"must be written clip:ARCH/PRETRAINED"),
])
def test_unknown_architecture_or_tag_is_an_input_error_with_near_matches(name, message):
    with pytest.raises(InputError, match=message):
        backbones.get(name)


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"checkpoint file '.*nothing\.safetensors'.*does not exist"):
        backbones.get(f"clip:{clip.TINY_ARCH}/{tmp_path}/nothing.safetensors")


# -- weights, offline first -----------------------------------------------------------------------
HINT = (r"No PyPI package ships CLIP weights\. On a machine with internet: pip install 'pixelmine\[clip\]' and run "
        r"python -c \"import open_clip; open_clip\.create_model_and_transforms\('ViT-B-32', "
        r"pretrained='laion2b_s34b_b79k'\)\", then copy its ~/\.cache/huggingface/hub/models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K folder into .*hf-home/hub here.*"
        r"https://huggingface\.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


def test_missing_weights_give_the_install_and_download_hint(empty_caches, monkeypatch):
    spec = backbones.get("clip:ViT-B-32/laion2b_s34b_b79k")
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"looked in Hugging Face cache .*hf-home.*downloading is switched off.*" + HINT):
        spec.locate_weights(allow_download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the environment alone switches downloads off
    with pytest.raises(WeightsNotFoundError, match=HINT):
        spec.resolve_weights()
    with pytest.raises(WeightsNotFoundError, match=HINT):
        clip_text_encoder("clip:ViT-B-32/laion2b_s34b_b79k")
    assert time.perf_counter() - started < 2.0  # nothing waited on a network


def test_a_failed_download_keeps_the_reason_and_the_hint(empty_caches, monkeypatch):
    def no_network(self):
        raise OSError("Name or service not known")

    monkeypatch.setattr(clip.OpenClipPretrained, "download", no_network)
    with pytest.raises(WeightsNotFoundError, match=r"downloading failed \(.*Name or service not known\).*" + HINT):
        backbones.get("clip:ViT-B-32/laion2b_s34b_b79k").resolve_weights(allow_download=True)


def test_weights_in_the_hugging_face_cache_are_found_offline(empty_caches):
    snapshot = empty_caches / "hf-home" / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    found = backbones.get("clip:ViT-B-32/laion2b_s34b_b79k").locate_weights(allow_download=False)
    assert found.origin == "local cache" and found.path.name == "open_clip_model.safetensors"
    assert found.identity == "open_clip:ViT-B-32/laion2b_s34b_b79k"


def test_a_checkpoint_file_is_loaded_with_the_preprocessing_beside_it(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    random_spec = backbones.get(TINY)
    model = clip.create_clip_model(random_spec, random_spec.resolve_weights())
    checkpoint = tmp_path / "open_clip_model.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(checkpoint))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}))
    spec = backbones.get(f"clip:{clip.TINY_ARCH}/{checkpoint}")
    assert spec.name == f"clip:{clip.TINY_ARCH}/{checkpoint}" and spec.pretrained == str(checkpoint)
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5) and spec.preprocessing.std == (0.25, 0.25, 0.25)
    assert spec.locate_weights().identity.startswith("open_clip_model.safetensors sha256:")
    pixels = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        loaded, reference = backbones.build(spec).network, backbones.build(random_spec).network
        batch = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        assert torch.equal(loaded(batch)[1], reference(batch)[1])  # the same tensors, through the file
        assert backbones.build(spec)(pixels).shape == (2, DIM)


# -- the image tower through extraction -----------------------------------------------------------
def test_tiny_model_builds_fast_without_tags_or_map():
    import torch

    started = time.perf_counter()
    model = backbones.create(TINY)
    assert time.perf_counter() - started < 1.0
    assert model.output_names == ["features"] and not model.has_head and not model.has_map
    with torch.inference_mode():
        features = model(torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8))
    assert features.shape == (3, DIM) and features.dtype == torch.float32
    again = backbones.create(TINY)
    with torch.inference_mode():
        assert torch.equal(again(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)),
                           model(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)))  # fixed seed


def test_extraction_writes_features_through_the_cache_and_reruns_do_nothing(workspace):
    ws, result, elapsed = workspace
    assert result.computed == result.images == 12 and result.failed == 0
    assert result.backend.startswith("onnxruntime")  # the tower exported to ONNX and passed the cosine check
    features = ws.features(TINY)
    assert features.vectors.shape == (12, DIM) and features.vectors.dtype == np.float32
    assert features.tag_indices is None  # no classifier, no tags
    again = ws.extract(TINY, progress=False, workers=0)
    assert again.computed == 0 and again.cached == 12 and again.fingerprint == result.fingerprint
    assert elapsed < 20.0


def test_onnx_features_agree_with_open_clip_itself(workspace):
    """The graph (normalisation inside) equals open_clip's own encode_image on the same crops."""
    import torch

    from pixelmine.imaging.decode import load_pixels

    ws, _, _ = workspace
    features = ws.features(TINY)
    rows = {row["id"]: row["path"] for row in ws.images(status="ok")}
    spec = backbones.get(TINY)
    pre = spec.preprocessing
    crops = np.stack([load_pixels(rows[i], input_size=pre.input_size, resize=pre.resize,
                                  interpolation=pre.interpolation) for i in features.ids])
    model = clip.create_clip_model(spec, spec.resolve_weights())
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = model.encode_image(x).numpy()
    np.testing.assert_allclose(np.asarray(features.vectors), expected, rtol=1e-3, atol=1e-4)


def test_an_image_ranks_itself_first(workspace):
    ws, _, _ = workspace
    vectors = np.asarray(ws.features(TINY).vectors, dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert (similarity.argmax(axis=1) == np.arange(len(unit))).all()


# -- the text side --------------------------------------------------------------------------------
def test_text_embeddings_are_unit_vectors_of_the_image_dimension_and_deterministic():
    with clip_text_encoder(TINY) as encoder:
        vectors = encoder.encode(TEXTS)
        assert encoder.dim == DIM and encoder.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
        assert encoder.logit_bias is None
        small_batches = encoder.encode(TEXTS, batch_size=3)
        assert encoder.encode([]).shape == (0, DIM)
        with pytest.raises(InputError, match="a list of strings"):
            encoder.encode("a blue sky")
    assert vectors.shape == (4, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_allclose(small_batches, vectors, atol=1e-6)
    with clip_text_encoder(TINY) as other:
        np.testing.assert_array_equal(other.encode(TEXTS), vectors)
    with pytest.raises(InputError, match="is closed"):
        encoder.encode(TEXTS)


def test_text_embeddings_equal_open_clip_encode_text():
    import torch

    spec = backbones.get(TINY)
    model = clip.create_clip_model(spec, spec.resolve_weights())
    tokens = open_clip.get_tokenizer(clip.TINY_ARCH)(TEXTS)
    with torch.inference_mode():
        expected = model.encode_text(tokens, normalize=True).numpy()
    with clip_text_encoder(TINY) as encoder:
        np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-6)


def test_text_ranking_of_images_equals_a_brute_force_reference(workspace):
    ws, result, _ = workspace
    features = ws.features(TINY)
    with clip_text_encoder(TINY) as encoder:
        assert encoder.fingerprint == features.fingerprint == result.fingerprint  # the same weights on both sides
        texts = encoder.encode(TEXTS[:3])
        scale = encoder.logit_scale
    images = np.asarray(features.vectors, dtype=np.float64)
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    ranked = np.argsort(-(unit @ texts.T.astype(np.float64)), axis=0, kind="stable").T
    for query, order in zip(texts, ranked):
        cosines = [float(np.dot(image, query) / (np.linalg.norm(image) * np.linalg.norm(query))) for image in images]
        assert list(order) == sorted(range(len(cosines)), key=lambda row: -cosines[row])
    logits = scale * (unit @ texts.T)  # zero-shot over the three texts as classes
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_text_encoder_needs_a_clip_name():
    with pytest.raises(InputError, match="text embeddings need a CLIP backbone"):
        clip_text_encoder("mobilenet_v2")
