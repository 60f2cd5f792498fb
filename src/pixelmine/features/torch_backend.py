"""Eager PyTorch execution: the reference path, and the fast one when a CUDA GPU is present.

float32 throughout: autocasting to bfloat16 on a CPU without bf16 matrix units made a matmul ~70x slower
on the machine this was developed on, so pixelmine never does it implicitly.
"""

from __future__ import annotations

import numpy as np

from ..backbones.model_outputs import OUTPUT_FEATURES, OUTPUT_LOGITS, OUTPUT_MAP


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..errors import InputError

        raise InputError(f"device {device!r} was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


class TorchRunner:
    """Runs a FeatureModel eagerly: ``run(uint8 NHWC batch) -> (features, logits or None, map or None)``."""

    name = "torch"

    def __init__(self, model, *, threads: int, device: str = "auto"):
        import torch

        self.device = pick_device(device)
        self.threads = threads
        self._previous_threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.model = model.eval().to(self.device)
        self.has_map = model.has_map

    def run(self, pixels: np.ndarray, *, with_map: bool = False):
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device != "cpu":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        self.model.with_map = with_map and self.has_map
        with torch.inference_mode():
            out = self.model(batch)
        out = dict(zip(self.model.output_names, out if isinstance(out, tuple) else (out,)))
        return tuple(None if out.get(name) is None else out[name].float().cpu().numpy()
                     for name in (OUTPUT_FEATURES, OUTPUT_LOGITS, OUTPUT_MAP))

    def describe(self) -> str:
        return f"torch eager on {self.device}" + (f", {self.threads} threads" if self.device == "cpu" else "")

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._previous_threads)
        self.model = None
