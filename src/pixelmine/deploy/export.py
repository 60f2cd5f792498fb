"""One ONNX file per trained model: the decoded image in, class probabilities out.

    result = ws.model("svm-...").export("shipped/")               # fp32; or precision="int8"
    # shipped/model.onnx + shipped/classifier.json; runs with plain onnxruntime (docs/deploy.md)

The graph takes ``image``: uint8 (N, H, W, 3) RGB, a batch of images of one size at their own size (one
image: ``array[None]``), EXIF orientation already applied by the caller. Inside, for each backbone of the
model: the resize and crop it was trained with (deploy/resize.py, equal to Pillow pixel for pixel), the
normalisation and the network (the very graph extraction runs, fp32 from the user cache or the workspace's
calibrated int8 graph); then the features side by side and the head: a linear probe as one ``Gemm``
(standardisation folded into its weights) and a softmax, Platt-calibrated SVMs as their folds' ``Gemm``
plus sigmoid calibrators, a fine-tuned network's logits averaged over its test-time moves. Output:
``probabilities`` (N, K), columns in the order of the sidecar's ``classes``.

A k-NN head votes among stored training vectors; it is refused with the reason and the fix.

Before a file is offered it is measured on the model's test split: its accuracy (with an interval), how
far its probabilities are from ``Model.predict``'s (fp32: <= 1e-4), and for int8 the accuracy lost
against the original; int8 that loses more than ``max_drop`` is refused and nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backbones
from ..errors import InputError, NotFittedError
from ..fileio import atomic_path, atomic_write_json, sha256_file
from .graph import GraphBuilder
from .resize import resize_crop

log = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
SIDECAR_FILE = "classifier.json"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
FORMAT = "pixelmine-classifier/1"
DEFAULT_MAX_DROP = 0.01  # test accuracy int8 may lose before it is refused
PARITY_TOLERANCE = 1e-4  # fp32: the largest probability difference from Model.predict that is accepted
PARITY_IMAGES = 64  # test images the parity check runs on


@dataclass(frozen=True)
class Part:
    """One network of the model, with the graph that runs it and the crop it takes."""

    backbone: str
    spec: backbones.Backbone
    graph: Path
    precision: str


@dataclass
class ExportResult:
    path: str
    sidecar: str
    precision: str
    size_bytes: int
    test: dict = field(default_factory=dict)  # n, accuracy, interval; empty when there is no test split
    parity: dict = field(default_factory=dict)  # images, max_abs_diff (against Model.predict)
    reference_accuracy: float | None = None  # the original model on the same test images (int8 guard)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# -- what is exportable ------------------------------------------------------------------------------
def check_exportable(model) -> None:
    if model.kind != "finetune" and model.head == "knn":
        raise InputError(f"model {model.name!r} has a k-NN head, which cannot be exported: its prediction is a "
                         "vote among the stored training vectors (every one of them would have to ship in the "
                         "file, and the search is not a fixed graph); train a linear head and export that: "
                         f"pixelmine train --head logreg --name {model.name}-linear")


def network_parts(model, precision: str) -> list[Part]:
    """The model's networks (one per backbone; the fine-tuned network itself) with the graphs that run them
    at ``precision`` (int8: the workspace's calibrated graphs, made now when missing)."""
    from ..features.embedder import Embedder

    sources = ([{"backbone": f"model:{model.name}", "fingerprint": None}] if model.kind == "finetune"
               else model.feature_sources)
    parts = []
    for source in sources:
        spec = backbones.get(source["backbone"], root=model.root)
        options = {"precision": precision}
        if precision == "int8":
            options["calibration"] = [(row["id"], row["path"]) for row in model.catalog.images(status="ok")]
        with Embedder(spec, workspace_root=model.root, **options) as embedder:
            parts.append(Part(spec.name, spec, Path(embedder.runner.path), precision))
    return parts


# -- the graph -----------------------------------------------------------------------------------------
def _inline(g: GraphBuilder, path: Path, prefix: str, pixels: str, wanted: list[str]) -> dict[str, str]:
    """Copy the network graph at ``path`` into ``g`` (tensor names prefixed), fed by ``pixels``; returns
    its outputs ``wanted`` by their original names."""
    import onnx
    from onnx import compose

    network = compose.add_prefix(onnx.load(str(path)), prefix)
    g.nodes.append(onnx.helper.make_node("Identity", [pixels], [network.graph.input[0].name]))
    g.nodes.extend(network.graph.node)
    g.initializers.extend(network.graph.initializer)
    g.opsets.update({entry.domain: max(entry.version, g.opsets.get(entry.domain, 0))
                     for entry in network.opset_import})
    return {name: prefix + name for name in wanted}


def _views(g: GraphBuilder, crops: str, moves) -> tuple[str, int]:
    """The crops (N, S, S, 3) and their test-time views stacked on the batch axis: (V N, S, S, 3), V."""
    views = [crops]
    reverse = g.const([-1], "int64")
    start, end = g.const([-1], "int64"), g.const([-(2 ** 62)], "int64")

    def flip(tensor, axis):
        return g.op("Slice", tensor, start, end, g.const([axis], "int64"), reverse)

    for move in moves:
        if move == "hflip":
            views.append(flip(crops, 2))
        elif move == "vflip":
            views.append(flip(crops, 1))
        elif move == "rot180":
            views.append(flip(flip(crops, 1), 2))
        elif move in ("rot90", "rot270"):  # np.rot90 over (rows, columns): transpose, then flip
            transposed = g.op("Transpose", crops, perm=[0, 2, 1, 3])
            views.append(flip(transposed, 1 if move == "rot90" else 2))
    return (g.op("Concat", *views, axis=0) if len(views) > 1 else crops), len(views)


def _linear_head(g: GraphBuilder, features: str, probe) -> str:
    from ..trust.heads import head_kind, linear_scores, svm_folds

    if head_kind(probe) == "logreg":
        scores = linear_scores(probe)  # the scaler folded into the weights: one Gemm
        logits = g.op("Gemm", features, g.const(scores.weights, "float32"), g.const(scores.bias, "float32"), transB=1)
        return g.op("Softmax", logits, axis=1)
    folds = svm_folds(probe)
    n_folds, n_scores = len(folds), folds[0]["weights"].shape[0]
    weights = np.concatenate([fold["weights"] for fold in folds])  # (F K', D)
    bias = np.concatenate([fold["bias"] for fold in folds])
    decisions = g.op("Gemm", features, g.const(weights, "float32"), g.const(bias, "float32"), transB=1)
    decisions = g.op("Reshape", decisions, g.const([-1, n_folds, n_scores], "int64"))
    a = g.const(np.stack([fold["a"] for fold in folds]), "float32")
    b = g.const(np.stack([fold["b"] for fold in folds]), "float32")
    calibrated = g.op("Sigmoid", g.op("Neg", g.op("Add", g.op("Mul", decisions, a), b)))  # (N, F, K')
    if n_scores == 1:  # binary: the calibrated score is classes_[1]'s
        probs = g.op("Concat", g.op("Sub", g.const(1.0, "float32"), calibrated), calibrated, axis=2)
    else:  # scikit-learn normalises over the classes, uniform where every score underflowed
        total = g.op("ReduceSum", calibrated, g.const([2], "int64"), keepdims=1)
        divided = g.op("Div", calibrated, g.op("Max", total, g.const(1e-30, "float32")))
        uniform = g.const(1.0 / n_scores, "float32")
        probs = g.op("Where", g.op("Greater", total, g.const(0.0, "float32")), divided,
                     g.op("Expand", uniform, g.op("Shape", calibrated)))
    return g.op("ReduceMean", probs, g.const([1], "int64"), keepdims=0)


def build_graph(model, parts: list[Part], *, head=None):
    """The classifier as one ONNX ModelProto (not yet saved). ``head``: the fitted probe to apply to the
    parts' features (default: the model's own; a compressed model's is refitted on its student features)."""
    import onnx
    from onnx import TensorProto, helper

    from ..backbones.model_outputs import OUTPUT_FEATURES, OUTPUT_LOGITS

    g = GraphBuilder()
    crops_by_preprocessing: dict = {}
    features = []
    probabilities = None
    for index, part in enumerate(parts):
        pre = part.spec.preprocessing
        key = (pre.input_size, pre.resize, pre.interpolation)
        if key not in crops_by_preprocessing:
            crops_by_preprocessing[key] = resize_crop(g, INPUT_NAME, input_size=pre.input_size, resize=pre.resize,
                                                      interpolation=pre.interpolation)
        crops = crops_by_preprocessing[key]
        if model.kind == "finetune":
            stacked, n_views = _views(g, crops, model.moves)
            outputs = _inline(g, part.graph, f"net{index}/", stacked, [OUTPUT_LOGITS])
            probs = g.op("Softmax", outputs[OUTPUT_LOGITS], axis=1)  # (V N, K)
            probs = g.op("Reshape", probs, g.const([n_views, -1, len(model.classes)], "int64"))
            probabilities = g.op("ReduceMean", probs, g.const([0], "int64"), keepdims=0)
        else:
            outputs = _inline(g, part.graph, f"net{index}/", crops, [OUTPUT_FEATURES])
            features.append(outputs[OUTPUT_FEATURES])
    if model.kind != "finetune":
        joined = g.op("Concat", *features, axis=1) if len(features) > 1 else features[0]
        probabilities = _linear_head(g, joined, head if head is not None else model._probe_bundle()["head"])
    g.rename(probabilities, OUTPUT_NAME)
    nodes = _reachable(g.nodes, OUTPUT_NAME)
    used = {name for node in nodes for name in _consumed(node)}
    graph = helper.make_graph(
        nodes, f"pixelmine {model.name}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(model.classes)])],
        [init for init in g.initializers if init.name in used])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in g.opsets.items()],
                              producer_name="pixelmine")
    proto.ir_version = min(proto.ir_version, 10)  # loadable by older ONNX Runtime releases too
    onnx.checker.check_model(proto)
    return proto


def _reachable(nodes, output: str) -> list:
    """The nodes the output depends on, in their original order (unused outputs of the copied networks,
    e.g. ImageNet logits or the feature map, cost nothing)."""
    producer = {name: k for k, node in enumerate(nodes) for name in node.output}
    keep, stack = set(), [output]
    while stack:
        k = producer.get(stack.pop())
        if k is None or k in keep:
            continue
        keep.add(k)
        stack.extend(_consumed(nodes[k]))
    return [node for k, node in enumerate(nodes) if k in keep]


def _consumed(node) -> list[str]:
    """The tensors a node reads: its inputs, and the outer tensors its subgraphs (an If's branches) read."""
    names = list(node.input)
    for attribute in node.attribute:
        if attribute.type == attribute.GRAPH:
            inner = attribute.g
            produced = {name for sub in inner.node for name in sub.output}
            names += [name for sub in inner.node for name in _consumed(sub) if name not in produced]
    return names


# -- running and measuring ------------------------------------------------------------------------------
def decode_min_side(parts: list[Part]) -> int:
    """The shorter side a JPEG may be decoded down to (Pillow's draft) without changing any part's crop."""
    return max(part.spec.preprocessing.resize for part in parts)


class ExportedSession:
    """An exported file loaded in ONNX Runtime: ``probabilities(image)`` for one decoded image."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        from ..features.embedder import available_cores
        from ..optional import require

        ort = require("onnxruntime", "Running an exported model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self.run(np.ascontiguousarray(image[None], dtype=np.uint8))[0]


def decode_for_export(path, min_side: int) -> np.ndarray:
    """The uint8 (H, W, 3) an exported file takes, decoded as pixelmine decodes (EXIF applied, draft)."""
    from ..imaging.decode import open_rgb

    return np.asarray(open_rgb(path, min_side=min_side), dtype=np.uint8)


def measure(model, graph_path: Path, parts: list[Part], *, reference: bool, progress=False
            ) -> tuple[dict, dict, float | None]:
    """(test metrics of the file, its parity with Model.predict, and with ``reference`` the original
    model's accuracy on the same test images)."""
    from ..learn.metrics import evaluate
    from ..progress import resolve_progress

    rows = [row for row in model.test_rows() if row["label"] in model.classes]
    if not rows:
        return {}, {}, None
    session = ExportedSession(graph_path)
    min_side = decode_min_side(parts)
    report, close = resolve_progress(progress, "measuring the exported file", unit="img")
    probs, kept = [], []
    try:
        for k, row in enumerate(rows):
            try:
                probs.append(session.probabilities(decode_for_export(row["path"], min_side)))
                kept.append(row)
            except Exception as exc:  # noqa: BLE001 - an unreadable test image is skipped and counted
                log.warning("cannot measure the export on %s: %s", row["path"], exc)
            report(k + 1, len(rows))
    finally:
        close()
    if not kept:
        return {}, {}, None
    probs = np.asarray(probs, dtype=np.float64)
    result = evaluate([row["label"] for row in kept], probs, model.classes, ids=[row["id"] for row in kept],
                      n_bootstrap=1000)
    test = {"n": result.n, "accuracy": result.metrics["accuracy"], "interval": result.intervals.get("accuracy"),
            "macro_f1": result.metrics.get("macro_f1")}
    sample = kept[:PARITY_IMAGES]
    predicted = model.predict([row["path"] for row in sample], top_k=len(model.classes))
    diffs = [np.abs(probs[k] - [dict((t["label"], t["probability"]) for t in row.top_k)[c] for c in model.classes]).max()
             for k, row in enumerate(predicted) if row.ok]
    parity = {"images": len(diffs), "max_abs_diff": float(max(diffs)) if diffs else None}
    original = model.evaluate(save=False, n_bootstrap=0).metrics["accuracy"] if reference else None
    return test, parity, original


# -- the whole export ----------------------------------------------------------------------------------
def _prepare_output(output) -> Path:
    directory = Path(output)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".pixelmine-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the export to {str(directory)!r} ({exc.strerror or exc}); choose a folder "
                         "you can write to: --output DIR") from exc
    return directory


def export_model(model, output, *, precision: str = "fp32", max_drop: float = DEFAULT_MAX_DROP, progress=False
                 ) -> ExportResult:
    """Write ``output``/model.onnx and classifier.json for ``model`` (see the module docstring)."""
    if precision not in backbones.PRECISIONS:
        raise InputError(f"The 'precision' parameter must be one of {', '.join(backbones.PRECISIONS)}. "
                         f"Got {precision!r} instead.")
    if not 0 <= max_drop <= 1:
        raise InputError(f"max_drop is a share of test accuracy between 0 and 1 (e.g. 0.01 = one point); "
                         f"got {max_drop!r}")
    check_exportable(model)
    started = time.perf_counter()
    directory = _prepare_output(output)
    parts = network_parts(model, precision)
    proto = build_graph(model, parts)
    import onnx

    target = directory / GRAPH_FILE
    with atomic_path(target) as staged:  # measured first; renamed into place only when accepted
        onnx.save(proto, str(staged))
        test, parity, reference_accuracy = measure(model, staged, parts, reference=precision == "int8",
                                                    progress=progress)
        if precision == "fp32" and parity.get("max_abs_diff") is not None and parity["max_abs_diff"] > PARITY_TOLERANCE:
            log.warning("the exported file's probabilities differ from Model.predict's by up to %.2g on %d test "
                        "images (large JPEGs decoded at different draft sizes by the model's parts?)",
                        parity["max_abs_diff"], parity["images"])
        if precision == "int8" and test and reference_accuracy is not None:
            drop = reference_accuracy - test["accuracy"]
            if drop > max_drop:
                raise InputError(f"int8 loses {drop:.3f} of test accuracy ({reference_accuracy:.3f} fp32 -> "
                                 f"{test['accuracy']:.3f} int8 on {test['n']} test images), more than the allowed "
                                 f"{max_drop:.3f}; export fp32 (--precision fp32), or accept the loss: --max-drop "
                                 f"{np.ceil(drop * 1000) / 1000:.3f}")
    write_sidecar(directory, model, parts, precision, {"test": test, "parity": parity,
                                                       "original_test_accuracy": reference_accuracy})
    return ExportResult(str(target), str(directory / SIDECAR_FILE), precision, target.stat().st_size, test, parity,
                        reference_accuracy, round(time.perf_counter() - started, 2))


def write_sidecar(directory: Path, model, parts: list[Part], precision: str, metrics: dict, **extra) -> dict:
    """classifier.json beside ``directory``/model.onnx: what the file takes and gives, and how it measured."""
    from .. import __version__

    sidecar = {
        "format": FORMAT, "model": model.name, "kind": model.kind, "head": model.head, "backbone": model.backbone,
        "classes": model.classes, "precision": precision,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", "height", "width", 3],
                  "color": "RGB", "orientation": "apply the EXIF orientation before (PIL.ImageOps.exif_transpose)",
                  "jpeg_draft_min_side": decode_min_side(parts)},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.classes)]},
        "parts": [{"backbone": p.backbone, "input_size": p.spec.preprocessing.input_size,
                   "resize": p.spec.preprocessing.resize,
                   "crop": "whole image" if p.spec.preprocessing.resize == p.spec.preprocessing.input_size
                   else "centre", "interpolation": p.spec.preprocessing.interpolation,
                   "mean": list(p.spec.preprocessing.mean), "std": list(p.spec.preprocessing.std),
                   "graph_sha256": sha256_file(p.graph)} for p in parts],
        "uncertainty": {"min_confidence": model.min_confidence, "min_margin": model.min_margin},
        "fingerprint": sha256_file(directory / GRAPH_FILE),
        "metrics": metrics, **extra,
        "pixelmine": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(directory / SIDECAR_FILE, sidecar)
    return sidecar


def read_sidecar(path) -> tuple[Path, dict]:
    """(the .onnx file, its sidecar) for an export folder, its model.onnx or its classifier.json."""
    import json

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    graph = path if path.suffix == ".onnx" else directory / GRAPH_FILE
    sidecar = directory / SIDECAR_FILE
    if not graph.is_file() or not sidecar.is_file():
        raise NotFittedError(f"{str(path)!r} is not a pixelmine export (it needs {GRAPH_FILE} and {SIDECAR_FILE} "
                             "side by side); make one with: pixelmine export --model NAME --output DIR")
    return graph, json.loads(sidecar.read_text())
