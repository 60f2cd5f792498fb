"""Structured channel pruning of a backbone with Torch-Pruning (``torch_pruning``).

Channels are removed, not zeroed: every pruned convolution, its BatchNorm and the layers reading it shrink,
so the pruned network is smaller and faster wherever it runs (PyTorch, the ONNX export, int8), with no
sparse kernels needed. The pruned network's outputs keep their shapes: the stem and the convolution that
gives the pooled features are left whole, and no ``nn.Linear`` is touched, so the features stay D-d
(1,280 for MobileNetV2 and EfficientNet-Lite0) and the logits K-d. A pruned network is a poorer feature
extractor until it is distilled from the original (deploy/distill.py).

Importance is the L2 magnitude of each channel's weights, ranked layer by layer (not globally), in one
step: no data, no randomness, so pruning the same model at the same sparsity twice gives the same
network, weight for weight. A resumed distillation relies on that to rebuild the structure its checkpoint
was written for.
"""

from __future__ import annotations

import copy
import math
import numbers

from ..errors import InputError
from ..optional import require

SPARSITY_RANGE = (0.1, 0.9)
TYPICAL_SPARSITY = "0.3 to 0.6"


CHANNEL_MULTIPLE = 8


def check_sparsity(sparsity) -> float:
    """``sparsity`` as a float, or InputError when it is not a number in :data:`SPARSITY_RANGE`."""
    low, high = SPARSITY_RANGE
    value = _as_number(sparsity)
    if value is None or not low <= value <= high:
        raise InputError(
            f"sparsity must be a number from {low} to {high} (the fraction of channels each prunable layer "
            f"loses); got {sparsity!r}. Typical values are {TYPICAL_SPARSITY}: 0.5 halves the channels of "
            "every prunable layer, about 3x fewer multiply-accumulates for MobileNetV2")
    return value


def _as_number(value) -> float | None:
    if isinstance(value, bool):  # True is an int to Python, never a sparsity
        return None
    if isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def prune_channels(model, sparsity: float, *, seed: int = 0):
    """A pruned deep copy of the FeatureModel ``model``; ``model`` itself is left untouched.

    Each prunable layer loses ``sparsity`` of its output channels, those with the smallest L2 weight
    magnitude (depthwise convolutions lose the same channels as the layer feeding them). In an
    inverted-residual network only the expanded channels inside the blocks are prunable. The copy is in
    eval mode and records ``pruned_sparsity``. ``seed`` seeds the example batch the graph is traced with
    (magnitude importance does not depend on it); the global RNG is left as it was.
    """
    import torch

    require("torch_pruning", "Pruning a backbone")
    sparsity = check_sparsity(sparsity)
    pruned = copy.deepcopy(model).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        example = example_pixels(model, seed=seed)
        before = _output_shapes(pruned, example)
        protected = _protected_layers(pruned, feature_dim=before[0][-1])
        pruner = _channel_pruner(pruned, example, sparsity, protected)
        pruner.step()
    pruned.eval()
    _check_shapes_kept(before, _output_shapes(pruned, example))
    pruned.pruned_sparsity = sparsity
    return pruned


def example_pixels(model, *, seed: int = 0, batch: int = 1):
    """A random uint8 NHWC batch of the model's input size: what a FeatureModel takes."""
    import torch

    size = model.preprocessing.input_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)


def _output_shapes(model, example) -> list[tuple[int, ...]]:
    import torch

    with torch.inference_mode():
        outputs = model(example)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [tuple(output.shape) for output in outputs]


def _protected_layers(model, *, feature_dim: int) -> dict[str, list]:
    """The layers whose output channels pruning must keep, found by position and shape, not by name, so
    that any CNN backbone (torchvision, timm, a test net) is handled alike."""
    from torch import nn

    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    feature_convs = [conv for conv in convolutions if conv.out_channels == feature_dim]
    if not convolutions or not feature_convs:
        raise InputError(
            f"cannot prune {_describe(model)}: no convolution gives its {feature_dim}-d pooled features, so "
            "pruning could not keep the feature size. Prune a CNN backbone (mobilenet_v2, "
            "efficientnet_lite0) instead")
    expansions = _expansion_convs(convolutions)
    return {
        # Inverted-residual networks (MobileNetV2, EfficientNet): only the expanded channels inside each block
        # are pruned (the 1x1 expansion, its depthwise conv and the projection's input), where most of the
        # compute is; the residual stream every later block reads keeps its width. Measured on the demo's
        # MobileNetV2 at sparsity 0.5: pruning every group left a feature cosine of 0.29 to the original.
        "stream": [conv for conv in convolutions if conv not in expansions and not _is_depthwise(conv)]
        if expansions else [],
        # The stem sees raw RGB: it is cheap, and every later layer depends on the few channels it has.
        "stem": [convolutions[0]],
        # Its output channels are the pooled features: pruning them would change the feature size.
        "features": [feature_convs[-1]],
        # The classifier's logits and anything reading the features keep their sizes.
        "linear": [module for module in model.modules() if isinstance(module, nn.Linear)],
    }


def _is_depthwise(conv) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _expansion_convs(convolutions) -> list:
    """The 1x1 convolutions that feed a depthwise convolution (the expansion of an inverted residual)."""
    found = []
    for before, conv in zip(convolutions, convolutions[1:]):
        if _is_depthwise(conv) and before.groups == 1 and tuple(before.kernel_size) == (1, 1) \
                and before.out_channels == conv.in_channels:
            found.append(before)
    return found


def _channel_pruner(model, example, sparsity: float, protected: dict[str, list]):
    """A one-step L2-magnitude pruner over ``model``. The stem is kept whole except in a network whose
    only inner channels are the stem's (tiny_test): there it is pruned too, or nothing could be."""
    always = protected["stream"] + protected["features"] + protected["linear"]
    pruner = _magnitude_pruner(model, example, sparsity, ignored=protected["stem"] + always)
    if not _has_prunable_groups(pruner):
        pruner = _magnitude_pruner(model, example, sparsity, ignored=always)
    if not _has_prunable_groups(pruner):
        raise InputError(
            f"{_describe(model)} has no channels to prune besides its feature and classifier layers; prune "
            "a deeper backbone (mobilenet_v2, efficientnet_lite0)")
    return pruner


def _magnitude_pruner(model, example, sparsity: float, *, ignored: list):
    import torch_pruning as tp

    # round_to: channel counts stay multiples of 8, the width ONNX Runtime's convolution kernels block by;
    # measured on the demo's networks at sparsity 0.3, unrounded counts (96 -> 67) made the pruned file 1.5x
    # *slower* than the original in spite of 27 % fewer MACs
    return tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=sparsity, global_pruning=False, iterative_steps=1, ignored_layers=ignored,
        round_to=CHANNEL_MULTIPLE if _rounding_leaves_channels(model, ignored) else None)


def _rounding_leaves_channels(model, ignored) -> bool:
    """Rounding to CHANNEL_MULTIPLE only where every prunable layer has more channels than that (a tiny
    test network's 8 channels would otherwise round to nothing)."""
    from torch import nn

    prunable = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m not in ignored and not _is_depthwise(m)]
    return bool(prunable) and min(conv.out_channels for conv in prunable) >= 2 * CHANNEL_MULTIPLE


def _has_prunable_groups(pruner) -> bool:
    groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                      root_module_types=pruner.root_module_types)
    return next(iter(groups), None) is not None


def _check_shapes_kept(before: list[tuple[int, ...]], after: list[tuple[int, ...]]) -> None:
    # A network Torch-Pruning cannot follow (an op it does not trace) could silently change the outputs.
    if before != after:
        raise RuntimeError(f"pruning changed the model's output shapes from {before} to {after}; this "
                           "backbone cannot be pruned with pixelmine")


def _describe(model) -> str:
    spec = getattr(model, "spec", None)
    return f"backbone {spec.name!r}" if spec is not None else type(getattr(model, "network", model)).__name__


def count_parameters(module) -> int:
    """Number of parameters (weights and biases; not BatchNorm running statistics)."""
    return int(sum(parameter.numel() for parameter in module.parameters()))


def count_macs(model, input_size: int) -> int:
    """Operations for one ``input_size`` square image, counted the way Torch-Pruning's tables count MACs
    (``tp.utils.count_ops_and_params``): a multiply-accumulate per convolution and Linear weight use, plus
    one per element of BatchNorm, activation and pooling (for MobileNetV2 at 224: 320 M, of which about
    300 M are the convolutions'). A FeatureModel gets a uint8 NHWC image, any other module float NCHW."""
    import torch

    tp = require("torch_pruning", "Counting a model's operations")
    if hasattr(model, "preprocessing"):
        example = torch.zeros((1, input_size, input_size, 3), dtype=torch.uint8)
    else:
        example = torch.zeros((1, 3, input_size, input_size))
    operations, _ = tp.utils.count_ops_and_params(model, example)
    return int(operations)
