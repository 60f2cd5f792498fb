"""Stage 2: feature vectors (and ImageNet tags) per image and backbone, cached in the workspace.

Importing this package loads numpy only; extraction imports torch / onnxruntime when it runs.
"""

from .store import TOP_K_TAGS, FeatureSet, FeatureStore

__all__ = ["TOP_K_TAGS", "FeatureSet", "FeatureStore"]
