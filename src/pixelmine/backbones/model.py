"""The network every backend runs: uint8 pixels in, (features, logits) out.

Normalisation lives inside the model, so decode workers ship compact uint8 crops (150 KB for 224x224,
4x less than float32) and the exported ONNX graph carries its own preprocessing constants.
Requires torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import Backbone, Preprocessing
from .weights import ResolvedWeights


class FeatureModel(nn.Module):
    """``forward(pixels)``: pixels are uint8, (N, H, W, 3) RGB, H = W = ``preprocessing.input_size``.

    Returns ``features`` (N, D) float32 when the backbone has no classifier, else ``(features, logits)``
    with logits (N, C). Features are the pooled pre-logits activations (not L2-normalised).
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, *, spec: Backbone | None = None,
                 weights: ResolvedWeights | None = None):
        super().__init__()
        self.network = network
        self.preprocessing = preprocessing
        self.spec = spec
        self.weights = weights
        self.has_head = bool(spec is None or spec.num_classes)
        # Normalise in the 0..255 domain: (x - 255 mean) / (255 std), one subtract and one multiply.
        self.register_buffer("pixel_mean", torch.tensor(preprocessing.mean).mul(255.0).view(1, 3, 1, 1))
        self.register_buffer("pixel_scale", torch.tensor(preprocessing.std).mul(255.0).reciprocal().view(1, 3, 1, 1))

    @property
    def output_names(self) -> list[str]:
        return ["features", "logits"] if self.has_head else ["features"]

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)  # NHWC uint8 -> NCHW float (channels-last strides)
        x = (x - self.pixel_mean) * self.pixel_scale
        features, logits = self.network(x)
        return (features, logits) if self.has_head else features


class SplitClassifier(nn.Module):
    """Wraps a classification network whose last ``nn.Linear`` is its classifier: the rest of the network
    gives the pre-logits features, the Linear gives the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        parent, attribute, head = _last_linear(model)
        setattr(parent, attribute, nn.Identity())
        self.body = model
        self.head = head

    def forward(self, x):
        features = self.body(x)
        return features, self.head(features)


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

    def forward(self, x):
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.model.get_classifier()(features) if self.with_logits else None
        return features, logits
