"""``model:NAME``: the network of fine-tuned model NAME of a workspace, used as a backbone.

Discovery, similarity search and probes can then run on the features a user's own fine-tuning produced:
``pixelmine extract --backbone model:NAME``. The features are the fine-tuned network's pooled pre-logits
activations, its "tags" are its own classes, and its preprocessing is the one the model was trained with.
The weights' identity is the sha256 of the model's ``weights.pt``, so retraining the model under the same
name gives a new fingerprint and never mixes old and new vectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, NotFittedError
from .spec import Backbone, Preprocessing
from .weights import LocalCheckpoint, ResolvedWeights, sha256_of

PREFIX = "model"
WEIGHTS_FILE = "weights.pt"


def finetuned_backbone(name: str, *, lookup: Callable[[str], Backbone], root: str | os.PathLike | None) -> Backbone:
    """The Backbone for ``model:<name>`` in the workspace at ``root``."""
    from ..learn import artifacts

    if root is None:
        raise InputError(f"the backbone 'model:{name}' is a model of a workspace; use it through a workspace "
                         f"(ws.extract('model:{name}') or pixelmine extract --backbone model:{name} --workspace DIR)")
    directory = artifacts.model_path(root, name)
    if not directory.is_dir():
        known = sorted(p.name for p in (Path(root) / "models").glob("*/") if (p / "model.json").exists())
        raise InputError(f"no model named {name!r} in workspace {str(root)!r} for the backbone 'model:{name}'; "
                         + (f"models: {', '.join(known)}" if known else "train one with: pixelmine train --head finetune"))
    info = artifacts.read_info(directory)
    if info.get("kind") != "finetune":
        raise InputError(f"model {name!r} is a {info.get('head')} probe on {info.get('backbone')} features, not a "
                         f"fine-tuned network; its features are those of --backbone {info.get('backbone')}")
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise NotFittedError(f"model {name!r} has no {WEIGHTS_FILE}; train it again: pixelmine train --name {name} "
                             "--head finetune")
    base = lookup(info["backbone"])
    network = info["network"]
    size = int(network["input_size"])
    preprocessing = Preprocessing(input_size=size, resize=int(network["resize"]) if network.get("crop", True) else size,
                                  mean=tuple(network["mean"]), std=tuple(network["std"]),
                                  interpolation=network["interpolation"])
    classes = list(info["classes"])
    return replace(
        base, name=f"{PREFIX}:{name}", builder=_builder(base), preprocessing=preprocessing,
        description=f"fine-tuned model {name!r} ({base.name}, {len(classes)} classes: {', '.join(classes[:5])}"
                    + (", ..." if len(classes) > 5 else "") + ")",
        weights=(LocalCheckpoint(weights_path, sha256_of(weights_path)),), num_classes=len(classes),
        labels=lambda: classes, source="pixelmine")


def _builder(base: Backbone):
    def build(spec: Backbone, weights: ResolvedWeights):
        import torch
        from torch import nn

        from .model import FeatureModel, FinetunedNetwork

        # the pretrained weights are loaded first only because the base builders load strictly; the
        # fine-tuned state then replaces every one of them
        base_network = base.builder(base, base.resolve_weights())
        # The saved state is a FinetuneNet's: backbone = FeatureModel(base network), classifier = Linear.
        holder = nn.Module()
        holder.backbone = FeatureModel(base_network, base.preprocessing, spec=base)
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
        holder.classifier = nn.Linear(state["classifier.weight"].shape[1], state["classifier.weight"].shape[0])
        holder.load_state_dict(state, strict=True)
        return FinetunedNetwork(base_network, holder.classifier)

    return build
