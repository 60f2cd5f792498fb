"""int8 ONNX models: static quantization (QDQ), calibrated on the workspace's own images.

Static, not dynamic: ONNX Runtime's ``quantize_dynamic`` made every CNN tried 3-14x *slower* on CPU,
while calibrated static QDQ (uint8 activations, per-channel int8 weights, min-max ranges) runs faster
and keeps a linear probe's accuracy within its noise for MobileNetV2 (measured: benchmarks/README.md, "Extract").
The calibration set is up to ``CALIBRATION_IMAGES`` images of the first extraction run, spread evenly
over the catalog order; the quantized model is then cached beside the fp32 one and reused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..imaging.decode import load_pixels

_log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128  # more changes the ranges little; each costs one fp32 forward pass
CALIBRATION_BATCH = 16


def _calibration_pixels(spec, tasks, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    pre = spec.preprocessing
    picks = np.linspace(0, len(tasks) - 1, num=min(count, len(tasks))).round().astype(int) if tasks else []
    crops = []
    for index in dict.fromkeys(int(i) for i in picks):  # unique, in order
        try:
            crops.append(load_pixels(tasks[index][1], input_size=pre.input_size, resize=pre.resize,
                                     interpolation=pre.interpolation))
        except Exception as exc:  # an undecodable file is reported by the extraction itself
            _log.debug("calibration skips %s: %s", tasks[index][1], exc)
    if not crops:
        from ..errors import NotFittedError

        raise NotFittedError("int8 calibration needs at least one decodable image in the workspace; "
                             "run pixelmine ingest first, or use --precision fp32")
    return np.stack(crops)


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, spec, tasks, *,
                  fingerprint: str) -> Path:
    """Write a statically quantized copy of ``fp32_path`` calibrated on images of ``tasks`` (id, path)."""
    from ..optional import needs_extras

    with needs_extras("int8 extraction (--precision int8)"):
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    from .onnx_backend import _quiet_loggers, _stamp

    pixels = _calibration_pixels(spec, tasks)
    input_name = "pixels"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([pixels[i:i + CALIBRATION_BATCH] for i in range(0, len(pixels), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".tmp-quant-") as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quantized = os.path.join(tmp, "int8.onnx")
        with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnxruntime"):
            quant_pre_process(str(fp32_path), prepared)
            quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        _stamp(quantized, fingerprint)
        os.replace(quantized, out_path)
    _log.info("int8 model calibrated on %d images: %s", len(pixels), out_path)
    return out_path
