"""ONNX Runtime execution: export a backbone once (cached per user, onnx_cache.py), run it with deliberate
threading.

Why: on a CPU, eager PyTorch spends much of its time outside the convolutions; ONNX Runtime fuses
Conv+BN+activation and runs MobileNetV2 several times faster on the same two cores (see benchmarks/README.md, "Extract").

Threads: ``intra_op_num_threads`` = the cores this process may use (2 here), ``inter_op`` = 1 (a CNN
is one chain of ops). Spinning is off: between batches ORT's worker threads would otherwise busy-wait
and steal the CPU the decode workers need.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ..backbones.model_outputs import OUTPUT_FEATURES, OUTPUT_LOGITS, OUTPUT_MAP
from ..fileio import atomic_path
from ..errors import MissingDependencyError
from ..optional import require

_log = logging.getLogger(__name__)

ONNX_OPSET = 18


def _import_ort():
    return require("onnxruntime", "The ONNX Runtime backend (--backend onnx)")


def export_onnx(model, path: str | os.PathLike, *, fingerprint: str = "") -> Path:
    """Export a FeatureModel (uint8 NHWC in; features[, logits] out) with a dynamic batch axis.

    Uses torch's dynamo exporter, falling back to the TorchScript exporter for models it cannot trace.
    The file is written atomically and checked against the eager model on a random batch.
    """
    import torch

    size = model.preprocessing.input_size
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    with atomic_path(path) as tmp:
        _export(model, example, str(tmp))
        _stamp(str(tmp), fingerprint)
        _check(model, str(tmp), example)
    return Path(path)


def _export(model, example, target: str) -> None:
    import torch

    names = model.output_names
    sink = io.StringIO()  # both exporters print progress; a library keeps stdout clean
    with contextlib.redirect_stdout(sink), warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript"):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), target, input_names=["pixels"], output_names=names,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                              opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False)
            return
        except Exception as exc:  # the dynamo exporter rejects some models; TorchScript handles most CNNs
            _log.info("dynamo ONNX export failed (%s: %s); using the TorchScript exporter",
                      type(exc).__name__, exc)
        axes = {name: {0: "batch"} for name in ["pixels", *names]}
        torch.onnx.export(model, (example,), target, input_names=["pixels"], output_names=names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter's optimiser logs every pass at INFO; keep only its warnings while exporting."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _stamp(target: str, fingerprint: str) -> None:
    import onnx

    proto = onnx.load(target)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pixelmine_fingerprint", fingerprint
    onnx.save(proto, target)


def _check(model, target: str, example) -> None:
    import torch

    with torch.inference_mode():
        expected = model(example)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = OnnxRunner(target, threads=1).run(example.numpy())[0]
    ref = expected.numpy()
    cosine = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-12))
    if not np.isfinite(got).all() or cosine < 0.999:
        raise RuntimeError(f"the ONNX export disagrees with the PyTorch model (cosine {cosine:.5f}); "
                           "use --backend torch for this backbone")


def open_graph(path: str | os.PathLike, fingerprint: str, *, threads: int) -> "OnnxRunner | None":
    """The graph at ``path`` ready to run, or None when it is damaged (truncated, not ONNX) or stamped with
    another fingerprint: a cached file is trusted only when it is the very graph asked for."""
    try:
        runner = OnnxRunner(path, threads=threads)
    except MissingDependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for a damaged file
        _log.warning("cannot load the ONNX graph %s (%s: %s)", path, type(exc).__name__, exc)
        return None
    if runner.metadata.get("pixelmine_fingerprint") != fingerprint:
        runner.close()
        return None
    return runner


class OnnxRunner:
    """Runs an exported FeatureModel: ``run(uint8 NHWC batch) -> (features, logits or None, map or None)``."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, *, threads: int, spinning: bool = False):
        ort = _import_ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.has_map = OUTPUT_MAP in self.output_names
        self._plain_outputs = [name for name in self.output_names if name != OUTPUT_MAP]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, pixels: np.ndarray, *, with_map: bool = False):
        """(features, logits or None, feature map or None); the map is fetched only when asked for."""
        names = self._plain_outputs + ([OUTPUT_MAP] if with_map and self.has_map else [])
        outputs = dict(zip(names, self.session.run(names, {self.input_name: pixels})))
        return outputs[OUTPUT_FEATURES], outputs.get(OUTPUT_LOGITS), outputs.get(OUTPUT_MAP)

    def describe(self) -> str:
        return f"onnxruntime {self.path.name}, {self.threads} threads"

    def close(self) -> None:
        self.session = None
