"""The backbone registry: a plain dict from name to :class:`~.spec.Backbone`, plus name prefixes.

It starts from two explicit tables, so a name resolves the same in any process whatever was imported
before: :data:`~.builtin.BUILTIN_BACKBONES` (mobilenet_v2, efficientnet_lite0, tiny_test) and
:data:`PREFIXES`, the families built on demand from the rest of the name:

    timm:NAME            any pretrained timm model (weights the timm way; online)
    torchvision:NAME     any pretrained torchvision model
    full:NAME@SIZE       backbone NAME fed the whole image at SIZE px, no centre crop (full_frame.py)
    model:NAME           the network of fine-tuned model NAME of a workspace (finetuned.py; needs ``root``)
    clip:ARCH/PRETRAINED the image tower of an open_clip text-image model (clip.py; pixelmine[clip])

``register`` refuses a duplicate name; ``get``/``create`` raise :class:`~pixelmine.errors.InputError`
listing the valid names when they miss. Specs are light (no torch import); :func:`create` builds the network.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable

from ..errors import InputError
from .builtin import BUILTIN_BACKBONES
from .clip import clip_backbone
from .finetuned import finetuned_backbone
from .full_frame import full_frame
from .library import timm_backbone, torchvision_backbone
from .spec import Backbone

PrefixFactory = Callable[..., Backbone]  # factory(rest_of_name, *, lookup, root) -> Backbone

PREFIXES: dict[str, PrefixFactory] = {
    "timm": timm_backbone,
    "torchvision": torchvision_backbone,
    "full": full_frame,
    "model": finetuned_backbone,
    "clip": clip_backbone,
}

_REGISTRY: dict[str, Backbone] = {backbone.name: backbone for backbone in BUILTIN_BACKBONES}


def register(backbone: Backbone) -> Backbone:
    """Add a backbone. Raises InputError when the name is taken (a registry never silently overwrites)."""
    if backbone.name in _REGISTRY:
        raise InputError(f"a backbone named {backbone.name!r} is already registered; choose another name "
                         f"(registered: {', '.join(sorted(_REGISTRY))})")
    if ":" in backbone.name:
        raise InputError(f"backbone name {backbone.name!r} may not contain ':' (reserved for the prefixes "
                         f"{', '.join(p + ':' for p in sorted(PREFIXES))})")
    _REGISTRY[backbone.name] = backbone
    return backbone


def unregister(name: str) -> None:
    """Remove a backbone registered with :func:`register` (for tests and plugins with temporary backbones)."""
    if any(name == backbone.name for backbone in BUILTIN_BACKBONES):
        raise InputError(f"{name!r} is a built-in backbone and cannot be unregistered")
    _REGISTRY.pop(name, None)


def get(name: str, *, root: str | os.PathLike | None = None) -> Backbone:
    """The spec of a backbone (nothing is built or loaded). Lists the valid names on a miss.

    ``root`` is the workspace directory, needed only by ``model:NAME`` (a fine-tuned network of that
    workspace)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a backbone name must be a non-empty string; got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, _, rest = name.partition(":")
    if rest and prefix in PREFIXES:
        return PREFIXES[prefix](rest, lookup=lambda base: get(base, root=root), root=root)
    raise InputError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}, "
                     f"or a prefixed name: timm:MODEL, torchvision:MODEL, full:NAME@SIZE, model:TRAINED_MODEL, "
                     f"clip:ARCH/PRETRAINED "
                     f"(e.g. timm:convnext_tiny, full:mobilenet_v2@250); see: pixelmine backbones")


def names(pattern: str | None = None) -> list[str]:
    """Registered backbone names, optionally filtered by a glob (``names("eff*")``)."""
    found = sorted(_REGISTRY)
    return [n for n in found if fnmatch.fnmatchcase(n, pattern)] if pattern else found


def create(name: str, *, root: str | os.PathLike | None = None, allow_download: bool | None = None,
           device: str = "cpu"):
    """Build backbone ``name`` with its weights: a :class:`pixelmine.backbones.model.FeatureModel`
    (uint8 NHWC pixels in; features, logits and the feature map out), in eval mode."""
    return build(get(name, root=root), allow_download=allow_download, device=device)


def build(spec: Backbone, *, allow_download: bool | None = None, device: str = "cpu"):
    """Build the network of ``spec`` (a spec from :func:`get`) with its resolved weights, in eval mode."""
    from .model import FeatureModel

    weights = spec.resolve_weights(allow_download=allow_download)
    network = spec.builder(spec, weights)
    model = FeatureModel(network, spec.preprocessing, spec=spec, weights=weights)
    return model.eval().to(device)
