"""A trained model as one differentiable PyTorch network: pixels in [0, 1] -> log-probabilities of its classes.

Attacks and Grad-CAM need gradients through everything the model does to an image, so the network is rebuilt
from what the model is: its backbone(s) (normalisation inside, fp32 eager PyTorch) and, for a probe, the head
in PyTorch (:mod:`.heads`, equal to ``predict_proba``); for a fine-tuned model, its own classifier. It runs in
eval mode and its parameters never require gradients: gradients flow to the input (and to the feature maps,
which :attr:`ClassifierNetwork.feature_maps` keeps after each forward).

    network = classifier_network(model)
    log_probs = network(x)               # x: float32 (N, 3, S, S) in [0, 1], the model's decoded crops / 255
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def _crop_key(spec) -> tuple:
    # the framing, not the resampling filter: two parts that frame the image alike share one crop (the first
    # part's resampling), a difference far below what any attack or corruption changes
    pre = spec.preprocessing
    return pre.input_size, pre.resize


def model_backbones(model) -> list:
    """The backbone specs a model's images go through (two for an ``A+B`` probe), in feature order."""
    from .. import backbones

    names = [model.as_backbone] if model.kind == "finetune" else [s["backbone"] for s in model.feature_sources]
    specs = []
    for name in names:
        try:
            specs.append(backbones.get(name, root=model.root))
        except InputError as exc:
            raise InputError(f"model {model.name!r} was trained on features of {name!r}, a backbone pixelmine has "
                             f"no network for here ({exc}); explanations and attacks need the network: train on "
                             "a backbone it can run, e.g. pixelmine extract && pixelmine train --backbone "
                             "mobilenet_v2") from None
    return specs


def same_crop(specs) -> bool:
    return len({_crop_key(spec) for spec in specs}) == 1


def classifier_network(model):
    """The :class:`ClassifierNetwork` of ``model`` (InputError for a head that is not differentiable)."""
    from .. import backbones
    from .heads import linear_scores, torch_head

    specs = model_backbones(model)
    if not same_crop(specs):
        raise InputError(f"model {model.name!r} joins backbones that see different crops of an image "
                         f"({', '.join(s.name for s in specs)}); attacks need one input image for all of them: "
                         "train on backbones with the same framing (e.g. both full:NAME@SIZE)")
    parts = [backbones.build(spec) for spec in specs]
    head = scores = None
    if model.kind != "finetune":
        probe = model._probe_bundle()["head"]
        head, scores = torch_head(probe), linear_scores(probe)
    network = ClassifierNetwork(parts, head, scores, input_size=specs[0].preprocessing.input_size)
    network.specs = specs
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


class ClassifierNetwork(nn.Module):
    """``forward(x)``: float32 (N, 3, S, S) pixels in [0, 1] -> (N, K) log-probabilities.

    ``parts``: FeatureModels (uint8-range NHWC in, normalisation inside) whose pooled features are joined;
    ``head``: features -> log-probabilities, or None when the single part's own classifier gives the logits
    (a fine-tuned network); ``scores``: the head's :class:`~.heads.LinearScores`. After each forward,
    :attr:`class_scores` holds the scores Grad-CAM differentiates (the linear scores, or the fine-tuned
    logits) and, with :attr:`keep_maps`, :attr:`feature_maps` the parts' last feature maps."""

    def __init__(self, parts, head, scores=None, *, input_size: int):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.head = head
        if scores is not None:
            self.register_buffer("score_weights", torch.tensor(scores.weights, dtype=torch.float32))
            self.register_buffer("score_bias", torch.tensor(scores.bias, dtype=torch.float32))
        self.input_size = input_size
        self.keep_maps = False
        self.feature_maps: list = []
        self.features = None
        self.class_scores = None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"the network takes (N, 3, H, W) pixels in [0, 1]; got shape {tuple(x.shape)}")
        pixels = x.permute(0, 2, 3, 1) * 255.0  # FeatureModel takes NHWC in 0..255 and normalises itself
        features, maps, logits = [], [], None
        for part in self.parts:
            part.with_map = self.keep_maps and part.has_map
            out = part(pixels)
            out = out if isinstance(out, tuple) else (out,)
            named = dict(zip(part.output_names, out))
            features.append(named["features"])
            logits = named.get("logits")
            if "feature_map" in named:
                maps.append(named["feature_map"])
        self.feature_maps = maps
        self.features = torch.cat(features, dim=1)
        if self.head is None:
            self.class_scores = logits
            return torch.log_softmax(logits, dim=1)
        self.class_scores = self.features @ self.score_weights.T + self.score_bias
        return self.head(self.features)
