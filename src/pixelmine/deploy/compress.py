"""``pixelmine compress``: prune each network of a model, distil it back, refit the head, and measure the four
deployable files side by side.

    result = compress_model(ws.model("auto"), sparsity=0.5, budget_s=600)
    print(result.format_table())

For each backbone of the model: channels are removed for real (deploy/prune.py, the stem and the pooled
feature size kept), then the student learns to give the original network's pooled features on the
workspace's own images (deploy/distill.py; no labels, the test split never used, time-boxed by
``budget_s`` shared by all networks, resumable). A probe's head is refitted on the student's features with
the original's settings (or reused when the features stayed within :data:`REUSE_COSINE`); a fine-tuned
network keeps its own classifier, fed distilled features.

The pruned networks are saved as ONNX at once, in ``models/<name>/compressed/s<NN>/``, with the exported
classifier files ``fp32/`` and ``int8/`` (each a model.onnx + classifier.json that ``pixelmine serve --model``
and plain onnxruntime take) and ``compress.json``: the table of the original fp32, original int8, pruned
fp32 and pruned int8 files — file size, parameters, MACs, measured latency at batch 1 and throughput at
batch 8 (medians of interleaved runs on this machine), test accuracy with its interval, agreement with the
original's predictions, and the feature cosine to the original network.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backbones
from ..errors import InputError, NotFittedError
from ..fileio import atomic_write_json
from .export import GRAPH_FILE, ExportedSession, Part, build_graph, check_exportable, decode_for_export, \
    decode_min_side, network_parts, write_sidecar

log = logging.getLogger(__name__)

DEFAULT_SPARSITY = 0.5
DEFAULT_BUDGET_S = 600.0  # distillation, all networks together
MAX_DISTILL_IMAGES = 3000  # crops held in memory for distillation (about 0.5 GB at 250 px)
MAX_TEST_IMAGES = 2000  # test images each of the four files is measured on
REUSE_COSINE = 0.99  # student features this close to the original's keep the original head
TIMING_ROUNDS = 5
VARIANTS = ("original fp32", "original int8", "pruned fp32", "pruned int8")
TABLE_FILE = "compress.json"


@dataclass
class CompressResult:
    model: str
    sparsity: float
    directory: str
    rows: list[dict] = field(default_factory=list)  # one per variant, in VARIANTS order
    distillation: list[dict] = field(default_factory=list)  # one per network
    head: str = ""  # "refitted" or "reused"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, directory) -> "CompressResult":
        path = Path(directory) / TABLE_FILE
        if not path.is_file():
            raise NotFittedError(f"no compression table in {str(directory)!r}; run: pixelmine compress --model NAME")
        return cls(**json.loads(path.read_text()))

    def format_table(self) -> str:
        header = ("| file | size MB | params M | MACs M | latency b1 ms | throughput b8 img/s | test accuracy "
                  "[95 % CI] | agreement | feature cosine |")
        lines = [header, "|" + "---|" * 9]
        for row in self.rows:
            interval = row.get("interval") or [float("nan"), float("nan")]
            lines.append(f"| {row['variant']} | {row['size_mb']:.1f} | {row['params_m']:.2f} | {row['macs_m']:.0f} | "
                         f"{row['latency_ms']:.1f} | {row['throughput']:.1f} | {row['accuracy']:.3f} "
                         f"[{interval[0]:.3f}, {interval[1]:.3f}] | {row['agreement']:.3f} | {row['cosine']:.4f} |")
        return "\n".join(lines)


def compressed_dir(model, sparsity: float) -> Path:
    return model.dir / "compressed" / f"s{round(sparsity * 100):02d}"


# -- the networks --------------------------------------------------------------------------------------
def _network_names(model) -> list[str]:
    if model.kind == "finetune":
        return [f"model:{model.name}"]
    return [source["backbone"] for source in model.feature_sources]


def _distillation_images(model, limit: int) -> list[dict]:
    """The workspace's images outside the model's test split (labelled or not), evenly spread, at most ``limit``."""
    test = {row["id"] for row in model.test_rows()}
    rows = [row for row in model.catalog.images(status="ok") if row["id"] not in test]
    if len(rows) > limit:
        picks = np.linspace(0, len(rows) - 1, num=limit).round().astype(int)
        rows = [rows[k] for k in dict.fromkeys(int(p) for p in picks)]
    return rows


def _crops(spec, paths: list[str], progress, what: str) -> tuple[np.ndarray, list[int]]:
    """(the uint8 crops ``spec`` takes, for the rows that decoded), decoded ahead in the process pool."""
    from ..features.decoding import Decoder
    from ..features.embedder import crop_spec, default_workers
    from ..progress import resolve_progress

    tasks = [(str(k), path) for k, path in enumerate(paths)]
    parts, rows = [], []
    report, close = resolve_progress(progress, what, unit="img")
    try:
        for chunk in Decoder(tasks, crop_spec(spec), workers=default_workers(len(tasks)), chunk_size=32):
            if chunk.ids:
                parts.append(chunk.pixels)
                rows.extend(int(key) for key in chunk.ids)
            report(len(rows), len(tasks))
    finally:
        close()
    size = spec.preprocessing.input_size
    return (np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)), rows


def _student(model, name: str, index: int, sparsity: float, budget_s: float, directory: Path, progress):
    """(the pruned + distilled network as a Part, its distillation record, params, MACs, original params and MACs)."""
    from ..features.embedder import Embedder
    from ..features.onnx_backend import export_onnx
    from .distill import distill, teacher_targets
    from .prune import count_macs, count_parameters, prune_channels

    spec = backbones.get(name, root=model.root)
    teacher = backbones.build(spec)
    student = prune_channels(teacher, sparsity)
    rows = _distillation_images(model, MAX_DISTILL_IMAGES)
    if not rows:
        raise InputError(f"model {model.name!r} has no images outside its test split to distil on; ingest more images")
    crops, _ = _crops(spec, [row["path"] for row in rows], progress, f"decoding for {name}")
    with Embedder(spec, workspace_root=model.root) as embedder:
        targets = teacher_targets(lambda pixels: embedder.runner.run(pixels)[0], crops)
    with _torch_threads():
        record = distill(student, crops, targets, budget_s=budget_s, checkpoint=directory / f"net{index}-distill.pt",
                         progress=progress)
    del crops, targets
    graph = directory / f"net{index}.onnx"
    student.with_map = False
    export_onnx(student, graph, fingerprint=f"pruned {name} s{sparsity}")
    pre = spec.preprocessing.input_size
    sizes = {"params": count_parameters(student), "macs": count_macs(student, pre),
             "original_params": count_parameters(teacher), "original_macs": count_macs(teacher, pre)}
    return Part(name, spec, graph, "fp32"), {"network": name, **record.to_dict()}, sizes


class _torch_threads:
    """All cores for the student's steps (torch may have been set to fewer by an earlier stage)."""

    def __enter__(self):
        import torch

        from ..features.embedder import available_cores

        self.before = torch.get_num_threads()
        torch.set_num_threads(available_cores())

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


# -- the head ------------------------------------------------------------------------------------------
def _features(parts: list[Part], paths: list[str], progress) -> tuple[np.ndarray, list[int]]:
    """Each part's ONNX graph on its crops of ``paths``, side by side, for the rows every part read."""
    from ..features.embedder import available_cores
    from ..features.onnx_backend import OnnxRunner

    blocks, common = [], None
    for part in parts:
        crops, rows = _crops(part.spec, paths, progress, f"features of {part.backbone}")
        runner = OnnxRunner(part.graph, threads=available_cores())
        vectors = np.concatenate([runner.run(crops[i:i + 32])[0] for i in range(0, len(crops), 32)]) \
            if len(crops) else np.zeros((0, 0), np.float32)
        runner.close()
        blocks.append(dict(zip(rows, vectors)))
        common = set(rows) if common is None else common & set(rows)
    keep = sorted(common or ())
    return np.stack([np.concatenate([block[r] for block in blocks]) for r in keep]), keep


def _refit_head(model, student_parts: list[Part], progress):
    """(head, "refitted"|"reused", cosine of the student's features to the original's on the test images)."""
    from sklearn.base import clone

    from .distill import mean_cosine

    with np.load(model.dir / "data.npz", allow_pickle=False) as data:
        ids, labels, splits = data["ids"].tolist(), data["labels"], data["splits"]
    paths_by_id = {row["id"]: row["path"] for row in model.catalog.images(status="ok")}
    usable = [k for k, i in enumerate(ids) if i in paths_by_id]
    X, rows = _features(student_parts, [paths_by_id[ids[k]] for k in usable], progress)
    chosen = [usable[r] for r in rows]
    original = model._cached_features([ids[k] for k in chosen])
    test = [n for n, k in enumerate(chosen) if splits[k] == "test" and ids[k] in original]
    cosine = mean_cosine(X[test], np.stack([original[ids[chosen[n]]] for n in test])) if test else float("nan")
    probe = model._probe_bundle()["head"]
    if cosine >= REUSE_COSINE:
        return probe, "reused", cosine
    train = [n for n, k in enumerate(chosen) if splits[k] != "test"]
    return clone(probe).fit(X[train], labels[[chosen[n] for n in train]]), "refitted", cosine


# -- measuring -----------------------------------------------------------------------------------------
def _timings(sessions: dict[str, ExportedSession], image: np.ndarray) -> dict[str, tuple[float, float]]:
    """{variant: (median ms at batch 1, median images/s at batch 8)}, the variants interleaved in each round
    so that a change of machine load affects them all alike."""
    single, batch = image[None], np.repeat(image[None], 8, axis=0)
    for session in sessions.values():  # warm-up: first runs allocate and pick kernels
        session.run(single)
        session.run(batch)
    latencies = {name: [] for name in sessions}
    throughputs = {name: [] for name in sessions}
    for _ in range(TIMING_ROUNDS):
        for name, session in sessions.items():
            started = time.perf_counter()
            for _ in range(5):
                session.run(single)
            latencies[name].append((time.perf_counter() - started) / 5 * 1000)
            started = time.perf_counter()
            session.run(batch)
            session.run(batch)
            throughputs[name].append(16 / (time.perf_counter() - started))
    return {name: (statistics.median(latencies[name]), statistics.median(throughputs[name])) for name in sessions}


def _test_probabilities(session: ExportedSession, images: list[np.ndarray]) -> np.ndarray:
    return np.stack([session.probabilities(image) for image in images])


def _part_cosine(reference: list[Part], other: list[Part], paths: list[str]) -> float:
    from .distill import mean_cosine

    a, _ = _features(reference, paths, False)
    b, _ = _features(other, paths, False)
    return mean_cosine(a, b)


def _write_variant(directory: Path, model, parts: list[Part], head, precision: str) -> Path:
    import onnx

    from ..fileio import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / GRAPH_FILE) as staged:
        onnx.save(build_graph(model, parts, head=head), str(staged))
    return directory / GRAPH_FILE


def _int8_parts(model, parts: list[Part], directory: Path, *, original: bool) -> list[Part]:
    from ..features.quantize import quantize_int8

    if original:
        return network_parts(model, "int8")
    calibration = [(row["id"], row["path"]) for row in _distillation_images(model, 512)]
    quantized = []
    for index, part in enumerate(parts):
        target = directory / f"net{index}-int8.onnx"
        quantize_int8(part.graph, target, part.spec, calibration, fingerprint=f"{part.graph.name} int8")
        quantized.append(Part(part.backbone, part.spec, target, "int8"))
    return quantized


def compress_model(model, *, sparsity: float = DEFAULT_SPARSITY, budget_s: float = DEFAULT_BUDGET_S,
                   progress=False) -> CompressResult:
    """Prune and distil every network of ``model``, refit its head, write and measure the four files."""
    from ..learn.metrics import evaluate
    from .prune import check_sparsity

    sparsity = check_sparsity(sparsity)
    if not budget_s > 0:
        raise InputError(f"the distillation budget must be a positive number of seconds; got {budget_s!r}")
    check_exportable(model)
    rows = [row for row in model.test_rows() if row["label"] in model.classes]
    if len(rows) > MAX_TEST_IMAGES:  # evenly spread: the table's intervals say how much this costs
        rows = [rows[int(k)] for k in np.linspace(0, len(rows) - 1, num=MAX_TEST_IMAGES).round()]
    if not rows:
        raise InputError(f"model {model.name!r} has no labelled test images to measure a compressed file on; "
                         "train it with a test split (pixelmine train --test-size 0.15)")
    started = time.perf_counter()
    directory = compressed_dir(model, sparsity)
    directory.mkdir(parents=True, exist_ok=True)
    names = _network_names(model)
    students, records, sizes = [], [], []
    for index, name in enumerate(names):
        part, record, size = _student(model, name, index, sparsity, budget_s / len(names), directory, progress)
        students.append(part)
        records.append(record)
        sizes.append(size)
    originals = network_parts(model, "fp32")
    result = CompressResult(model.name, sparsity, str(directory), distillation=records)
    head, result.head, cosine = (None, "the fine-tuned classifier, kept", float("nan")) if model.kind == "finetune" \
        else _refit_head(model, students, progress)
    original_head = None if model.kind == "finetune" else model._probe_bundle()["head"]
    variants = {
        "original fp32": (originals, original_head),
        "original int8": (_int8_parts(model, originals, directory, original=True), original_head),
        "pruned fp32": (students, head),
        "pruned int8": (_int8_parts(model, students, directory, original=False), head),
    }
    files = {}
    for name, (parts, variant_head) in variants.items():
        folder = directory / name.replace(" ", "-")
        files[name] = _write_variant(folder, model, parts, variant_head, parts[0].precision)
    min_side = decode_min_side(originals)
    images = [decode_for_export(row["path"], min_side) for row in rows]
    labels = [row["label"] for row in rows]
    sessions = {name: ExportedSession(path) for name, path in files.items()}
    probabilities = {name: _test_probabilities(session, images) for name, session in sessions.items()}
    timings = _timings(sessions, images[0])
    reference = probabilities["original fp32"].argmax(axis=1)
    test_paths = [row["path"] for row in rows]
    head_params = sum(int(np.size(v)) for v in _head_arrays(original_head))
    for name, (parts, variant_head) in variants.items():
        evaluation = evaluate(labels, probabilities[name], model.classes, n_bootstrap=1000)
        pruned = name.startswith("pruned")
        feature_cosine = 1.0 if name == "original fp32" else (
            cosine if name == "pruned fp32" and np.isfinite(cosine) else _part_cosine(originals, parts, test_paths))
        result.rows.append({
            "variant": name, "size_mb": files[name].stat().st_size / 1e6,
            "params_m": (sum(s["params" if pruned else "original_params"] for s in sizes) + head_params) / 1e6,
            "macs_m": sum(s["macs" if pruned else "original_macs"] for s in sizes) / 1e6,
            "latency_ms": timings[name][0], "throughput": timings[name][1],
            "accuracy": evaluation.metrics["accuracy"], "interval": evaluation.intervals.get("accuracy"),
            "agreement": float(np.mean(probabilities[name].argmax(axis=1) == reference)),
            "cosine": float(feature_cosine), "n": evaluation.n, "path": str(files[name]),
        })
        write_sidecar(files[name].parent, model, parts, parts[0].precision,
                      {"test": {"n": evaluation.n, "accuracy": evaluation.metrics["accuracy"],
                                "interval": evaluation.intervals.get("accuracy")}},
                      compressed={"sparsity": sparsity, "variant": name})
    for session in sessions.values():
        session.session = None
    base = result.rows[0]
    for row in result.rows[1:]:
        row["speedup_b1"] = base["latency_ms"] / row["latency_ms"]
        row["speedup_b8"] = row["throughput"] / base["throughput"]
        row["accuracy_change"] = row["accuracy"] - base["accuracy"]
    result.seconds = round(time.perf_counter() - started, 1)
    atomic_write_json(directory / TABLE_FILE, result.to_dict())
    _add_to_card(model, result)
    return result


def _head_arrays(probe) -> list[np.ndarray]:
    if probe is None:
        return []
    from ..trust.heads import head_kind, linear_scores, svm_folds

    if head_kind(probe) == "logreg":
        scores = linear_scores(probe)
        return [scores.weights, scores.bias]
    return [array for fold in svm_folds(probe) for array in fold.values()]


CARD_SECTION = "## Compression"


def _add_to_card(model, result: CompressResult) -> None:
    """The table in the model card, replacing an earlier one for the same sparsity."""
    from ..fileio import atomic_write_text

    card = (model.dir / "card.md").read_text()
    title = f"{CARD_SECTION} (sparsity {result.sparsity:.2f})"
    if title in card:
        head, _, rest = card.partition(title)
        following = rest.find("\n## ")
        card = head.rstrip() + ("\n\n" + rest[following + 1:] if following >= 0 else "\n")
    card = card.rstrip() + "\n\n" + "\n".join([
        title, "",
        f"Measured by `pixelmine compress --model {model.name} --sparsity {result.sparsity:g}` on this machine "
        f"({time.strftime('%Y-%m-%d')}); latency and throughput are medians of interleaved runs.", "",
        result.format_table(), ""])
    atomic_write_text(model.dir / "card.md", card)
