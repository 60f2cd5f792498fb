"""Stage 2: feature vectors (and ImageNet tags) per image and backbone, cached in the workspace.

Importing this package loads numpy only; extraction imports torch / onnxruntime when it runs.
``pixelmine.features.extract.extract`` is the pipeline; ``Workspace.extract`` the usual entry point.
"""

from .extract import ExtractConfig, ExtractResult
from .store import TOP_K_TAGS, FeatureSet, FeatureStore

__all__ = ["TOP_K_TAGS", "ExtractConfig", "ExtractResult", "FeatureSet", "FeatureStore"]
