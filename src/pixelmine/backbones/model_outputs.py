"""Names of a backbone network's outputs, in the exported ONNX graph too (no torch import)."""

OUTPUT_FEATURES = "features"  # (N, D) pooled pre-logits activations
OUTPUT_LOGITS = "logits"  # (N, C) the backbone's classifier
OUTPUT_MAP = "feature_map"  # (N, C', h, w) the last convolutional feature map, before global pooling
