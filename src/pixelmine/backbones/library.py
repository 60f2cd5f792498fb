"""Backbones built on demand from a library's own model zoo: ``timm:NAME`` and ``torchvision:NAME``.

Their weights resolve the library's normal way (its cache, else a download), so they need internet the
first time; the preprocessing comes from the library's pretrained config.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import PurePosixPath

from ..errors import InputError
from .spec import Backbone, Preprocessing
from .weights import CheckpointFile, HubModel, ResolvedWeights
from ..optional import require

_log = logging.getLogger(__name__)


def _interpolation(name: str, model: str) -> str:
    if name in ("bilinear", "bicubic"):
        return name
    _log.warning("%s asks for %r interpolation; pixelmine resizes with bicubic instead", model, name)
    return "bicubic"


# -- timm -----------------------------------------------------------------------------------------
def timm_backbone(model_name: str, **_context) -> Backbone:
    """``timm:convnext_tiny.fb_in22k`` -> a Backbone with timm's pretrained config and weights."""
    timm = require("timm", f"The backbone 'timm:{model_name}'")
    from timm.models import get_pretrained_cfg
    if not timm.is_model(model_name):
        raise InputError(f"timm has no model named {model_name!r}; list them with: "
                         f"python -c \"import timm; print(timm.list_models(pretrained=True))\"")
    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise InputError(f"timm model {model_name!r} has no pretrained weights; choose a name from "
                         f"timm.list_models(pretrained=True)")
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if cfg.hf_hub_id:
        sources = (HubModel(cfg.hf_hub_id, getattr(cfg, "hf_hub_filename", None) or "model.safetensors"),)
    else:
        sources = (_url_checkpoint(cfg.url, layout="timm"),)
    size = int(cfg.input_size[-1])
    labels = _timm_label_names(cfg)
    return Backbone(
        name=f"timm:{name}",
        description=f"timm {name} (pretrained weights from the timm hub; needs internet the first time)",
        builder=_build_timm, weights=sources,
        preprocessing=Preprocessing(input_size=size, resize=math.floor(size / (cfg.crop_pct or 0.875)),
                                    mean=tuple(cfg.mean), std=tuple(cfg.std),
                                    interpolation=_interpolation(cfg.interpolation or "bicubic", name)),
        num_classes=int(cfg.num_classes or 0) if labels else 0,
        labels=(lambda: labels) if labels else None, source="timm")


def _timm_label_names(cfg) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(cfg)
        return ImageNetInfo(subset).label_descriptions() if subset else None
    except Exception:  # older timm without ImageNetInfo, or an unknown subset: no tags
        return None


def _build_timm(spec: Backbone, weights: ResolvedWeights):
    import timm

    from .model import TimmFeatures

    model_name = spec.name.partition(":")[2]
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights.path)},
                              num_classes=None if spec.num_classes else 0)
    return TimmFeatures(model, with_logits=bool(spec.num_classes))


def _url_checkpoint(url: str, layout: str) -> CheckpointFile:
    filename = PurePosixPath(url).name
    # torch.hub convention: name-<first hex digits of sha256>.pth
    match = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$", filename)
    return CheckpointFile(filename=filename, sha256=match.group(1) if match else "", url=url, layout=layout)


# -- torchvision ----------------------------------------------------------------------------------
def torchvision_backbone(model_name: str, **_context) -> Backbone:
    """``torchvision:resnet50`` (default weights) or ``torchvision:resnet50.IMAGENET1K_V1``."""
    tvm = require("torchvision.models", f"The backbone 'torchvision:{model_name}'")
    arch, _, tag = model_name.partition(".")
    if arch not in tvm.list_models():
        raise InputError(f"torchvision has no model named {arch!r}; choose one of: "
                         f"{', '.join(tvm.list_models(module=tvm))}")
    enum = tvm.get_model_weights(arch)
    try:
        weights = enum[tag] if tag else enum.DEFAULT
    except KeyError:
        raise InputError(f"torchvision model {arch!r} has no weights {tag!r}; choose one of: "
                         f"{', '.join(w.name for w in enum)}") from None
    transforms = weights.transforms()
    crop = int(_first(getattr(transforms, "crop_size", 224)))
    resize = int(_first(getattr(transforms, "resize_size", crop)))
    interpolation = getattr(getattr(transforms, "interpolation", None), "value", "bilinear")
    categories = list(weights.meta.get("categories") or [])
    return Backbone(
        name=f"torchvision:{arch}.{weights.name}",
        description=f"torchvision {arch} {weights.name} (needs internet the first time)",
        builder=_build_torchvision, weights=(_url_checkpoint(weights.url, layout="torchvision"),),
        preprocessing=Preprocessing(input_size=crop, resize=max(resize, crop), mean=tuple(transforms.mean),
                                    std=tuple(transforms.std), interpolation=_interpolation(interpolation, arch)),
        num_classes=len(categories), labels=(lambda: categories) if categories else None, source="torchvision")


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _build_torchvision(spec: Backbone, weights: ResolvedWeights):
    import torch
    import torchvision.models as tvm

    from .model import SplitClassifier, verify_split

    arch = spec.name.partition(":")[2].partition(".")[0]
    model = tvm.get_model(arch, weights=None)
    model.load_state_dict(torch.load(weights.path, map_location="cpu", weights_only=True), strict=True)
    return verify_split(SplitClassifier(model).eval(), spec.preprocessing.input_size)
