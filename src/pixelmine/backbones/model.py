"""The network every backend runs: uint8 pixels in, pooled features, logits and the last feature map out.

Normalisation lives inside the model, so decode workers ship compact uint8 crops (150 KB for 224x224,
4x less than float32) and the exported ONNX graph carries its own preprocessing constants.

Every wrapped network returns ``(feature_map or None, features, logits or None)``: the last convolutional
feature map (N, C, h, w) before global pooling, when the architecture has one pixelmine can reach
(explanations turn it into class activation maps), the pooled pre-logits features (N, D), and the
classifier's logits (N, K). Requires torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import Backbone, Preprocessing
from .weights import ResolvedWeights

from .model_outputs import OUTPUT_FEATURES, OUTPUT_LOGITS, OUTPUT_MAP


class FeatureModel(nn.Module):
    """``forward(pixels)``: pixels are uint8, (N, H, W, 3) RGB, H = W = ``preprocessing.input_size``.

    Returns ``features`` (N, D) float32 when the backbone has no classifier, else ``(features, logits)``
    with logits (N, C); with :attr:`with_map` set (only where :attr:`has_map`), the last feature map
    (N, C', h, w) follows as the final element. :attr:`output_names` names the elements in order.
    Features are the pooled pre-logits activations (not L2-normalised).
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, *, spec: Backbone | None = None,
                 weights: ResolvedWeights | None = None):
        super().__init__()
        self.network = network
        self.preprocessing = preprocessing
        self.spec = spec
        self.weights = weights
        self.has_head = bool(spec is None or spec.num_classes)
        self.has_map = bool(getattr(network, "has_map", False))
        self.with_map = False  # the ONNX export turns it on, so the graph carries the map as an extra output
        # Normalise in the 0..255 domain: (x - 255 mean) / (255 std), one subtract and one multiply.
        self.register_buffer("pixel_mean", torch.tensor(preprocessing.mean).mul(255.0).view(1, 3, 1, 1))
        self.register_buffer("pixel_scale", torch.tensor(preprocessing.std).mul(255.0).reciprocal().view(1, 3, 1, 1))

    @property
    def output_names(self) -> list[str]:
        return ([OUTPUT_FEATURES] + ([OUTPUT_LOGITS] if self.has_head else [])
                + ([OUTPUT_MAP] if self.with_map and self.has_map else []))

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)  # NHWC uint8 -> NCHW float (channels-last strides)
        x = (x - self.pixel_mean) * self.pixel_scale
        feature_map, features, logits = self.network(x)
        outputs = [features] + ([logits] if self.has_head else [])
        if self.with_map and self.has_map:
            outputs.append(feature_map)
        return tuple(outputs) if len(outputs) > 1 else features


class SplitClassifier(nn.Module):
    """Wraps a torchvision classification network whose last ``nn.Linear`` is its classifier: the rest of
    the network gives the pre-logits features, the Linear gives the logits.

    The feature map is reached for the two layouts torchvision's CNNs use: ``features`` then (optional
    ``avgpool``) then ``classifier`` (MobileNet, EfficientNet, ConvNeXt, VGG-like), and the ResNet layout
    (``layer4``, ``avgpool``, ``fc``). Any other network is wrapped without a map; :func:`verify_split`
    checks the split path against the network's own forward before it is trusted.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        parent, attribute, head = _last_linear(model)
        setattr(parent, attribute, nn.Identity())
        self.body = model
        self.head = head
        self.layout = _map_layout(model)
        self.has_map = self.layout is not None

    def forward(self, x):
        if self.layout == "features-classifier":
            feature_map = self.body.features(x)
            pooled = self.body.avgpool(feature_map) if hasattr(self.body, "avgpool") else \
                torch.nn.functional.adaptive_avg_pool2d(feature_map, 1)
            if not any(isinstance(m, nn.Flatten) for m in self.body.classifier.modules()):
                pooled = torch.flatten(pooled, 1)
            features = self.body.classifier(pooled)
        elif self.layout == "resnet":
            body = self.body
            y = body.maxpool(body.relu(body.bn1(body.conv1(x))))
            feature_map = body.layer4(body.layer3(body.layer2(body.layer1(y))))
            features = torch.flatten(body.avgpool(feature_map), 1)
        else:
            feature_map, features = None, self.body(x)
        return feature_map, features, self.head(features)


def _map_layout(model: nn.Module) -> str | None:
    if isinstance(getattr(model, "features", None), nn.Module) and isinstance(getattr(model, "classifier", None), nn.Module):
        return "features-classifier"
    if all(hasattr(model, name) for name in ("conv1", "bn1", "relu", "maxpool", "layer4", "avgpool", "fc")):
        return "resnet"
    return None


def verify_split(network: SplitClassifier, input_size: int) -> SplitClassifier:
    """Drop the map path of ``network`` when its features disagree with the network's own forward
    (pre-logits): a layout that only looks familiar must never change the vectors."""
    if not network.has_map:
        return network
    with torch.inference_mode():
        x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        _, split_features, _ = network(x)
        expected = network.body(x)
    if split_features.shape != expected.shape or not torch.allclose(split_features, expected, rtol=1e-4, atol=1e-4):
        network.layout, network.has_map = None, False
    return network


class FinetunedNetwork(nn.Module):
    """A fine-tuned network as a backbone (``model:NAME``): the base network with the fine-tuned weights,
    logits from the fine-tuned classifier."""

    def __init__(self, network: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.network = network
        self.classifier = classifier
        self.has_map = bool(getattr(network, "has_map", False))

    def forward(self, x):
        feature_map, features, _ = self.network(x)
        return feature_map, features, self.classifier(features)


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = name
    if found is None:
        raise TypeError(f"{type(model).__name__} has no nn.Linear classifier; pixelmine cannot split its features")
    parent_name, _, attribute = found.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attribute, getattr(parent, attribute)


class TimmFeatures(nn.Module):
    """A timm model through its common surface: ``forward_head(pre_logits=True)`` and ``get_classifier()``."""

    def __init__(self, model: nn.Module, with_logits: bool):
        super().__init__()
        self.model = model
        self.with_logits = with_logits
        self.has_map = _is_convolutional(model)

    def forward(self, x):
        feature_map = self.model.forward_features(x)
        features = self.model.forward_head(feature_map, pre_logits=True)
        logits = self.model.get_classifier()(features) if self.with_logits else None
        # transformers give tokens (N, T, C), not a spatial map: no class activation maps for those
        return (feature_map if self.has_map else None), features, logits


def _is_convolutional(model: nn.Module) -> bool:
    """True when ``forward_features`` gives an (N, C, h, w) map (a CNN), judged on one tiny forward."""
    size = int(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.forward_features(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
    return out.ndim == 4
