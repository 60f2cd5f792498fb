"""The one way a file becomes vectors: :class:`Embedder`, a resident backbone session plus decoding, keyed
by the backbone's fingerprint.

Extraction, ``Model.predict`` on new files, ``similar`` on a new file and the HTTP server all embed through
it, so the same bytes give the same numbers everywhere. It returns the pooled feature vector, the
classifier's logits (ImageNet for the pretrained backbones) and, on request, the last convolutional feature
map (explanations turn it into class activation maps).

    embedder = Embedder.open("mobilenet_v2")                # ONNX Runtime, fp32, graph from the user cache
    out = embedder.embed_files(["a.jpg", "b.png"])          # .features (n, D), .logits, .rows, .errors
    out = embedder.embed_pixels(crops, with_map=True)       # uint8 (n, S, S, 3) crops -> .feature_map too
    embedder.close()

Backends: ``onnx`` (ONNX Runtime; the fast path on CPUs) or ``torch`` (eager; CUDA when present).
Precisions: ``fp32``, or ``int8`` (ONNX only: static QDQ calibrated on the workspace's own images, so that
graph lives in the workspace's feature cache, not the user cache).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backbones
from ..errors import InputError
from ..progress import resolve_progress
from .decoding import CropSpec, Decoder, decode_chunk

_log = logging.getLogger(__name__)

BACKENDS = ("onnx", "torch")
SMALL_JOB = 64  # files; below this, decode in threads of this process instead of paying for a process pool


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_workers(files: int) -> int:
    """Decode processes for a job of ``files``: none (threads) for a small job, else one core less than all."""
    return 0 if files < SMALL_JOB else max(1, available_cores() - 1)


def crop_spec(spec: backbones.Backbone) -> CropSpec:
    """What decoding produces for ``spec``: its (input_size, input_size, 3) uint8 crop."""
    pre = spec.preprocessing
    return CropSpec(pre.input_size, pre.resize, pre.interpolation)


@dataclass
class Embeddings:
    """Outputs for the rows that could be embedded; ``errors`` says why each other row could not."""

    features: np.ndarray  # (n, D) float32, pooled pre-logits activations
    logits: np.ndarray | None = None  # (n, C) float32, the backbone's classifier; None when it has none
    feature_map: np.ndarray | None = None  # (n, C', h, w) float32, only when asked for (with_map=True)
    rows: list[int] = field(default_factory=list)  # input positions of the n embedded rows, in order
    errors: dict[int, str] = field(default_factory=dict)  # input position -> why it could not be embedded

    def __len__(self) -> int:
        return len(self.rows)


def precision_of(spec: backbones.Backbone, fingerprint: str) -> str:
    """The precision at which ``spec`` gives ``fingerprint`` (InputError when the weights here differ)."""
    located = spec.locate_weights()
    for precision in backbones.PRECISIONS:
        if spec.fingerprint(located, precision) == fingerprint:
            return precision
    raise InputError(f"these vectors were computed by {spec.name} with fingerprint {fingerprint[:12]}, but "
                     f"{spec.name} here (weights {located.identity}) gives other features; install the same "
                     "backbone weights, or extract and train again: pixelmine extract, pixelmine train")


class Embedder:
    """A backbone loaded once (an ONNX Runtime session or an eager torch module) with its decoding."""

    def __init__(self, spec: backbones.Backbone, *, precision: str = "fp32", backend: str = "onnx",
                 threads: int | None = None, device: str = "auto", allow_download: bool | None = None,
                 workspace_root: str | os.PathLike | None = None, calibration=None):
        if backend not in BACKENDS:
            raise InputError(f"The 'backend' parameter must be one of {', '.join(BACKENDS)}. Got {backend!r} instead.")
        if precision not in backbones.PRECISIONS:
            raise InputError(f"The 'precision' parameter must be one of {', '.join(backbones.PRECISIONS)}. "
                             f"Got {precision!r} instead.")
        if precision == "int8" and (backend != "onnx" or workspace_root is None):
            raise InputError("precision 'int8' needs the onnx backend and a workspace (it is calibrated on the "
                             f"workspace's images); got backend {backend!r}")
        self.spec = spec
        self.precision = precision
        self.threads = threads or available_cores()
        self.located = spec.locate_weights(allow_download=allow_download)
        self.fingerprint = spec.fingerprint(self.located, precision)
        self.crop = crop_spec(spec)
        self.exported = False  # True when this embedder had to export the ONNX graph (not found in the cache)
        self._allow_download = allow_download
        self._decode_pool: ThreadPoolExecutor | None = None
        if backend == "torch":
            from .torch_backend import TorchRunner

            self.runner = TorchRunner(backbones.build(spec, allow_download=allow_download), threads=self.threads,
                                      device=device)
        else:
            self.runner = self._onnx_runner(workspace_root, calibration)

    @classmethod
    def open(cls, backbone: str, *, root: str | os.PathLike | None = None, fingerprint: str | None = None,
             **options) -> "Embedder":
        """An embedder for backbone name ``backbone``; with ``fingerprint``, the precision that produced those
        vectors (InputError when this machine's weights cannot reproduce them)."""
        spec = backbones.get(backbone, root=root)
        if fingerprint is not None:
            options["precision"] = precision_of(spec, fingerprint)
        return cls(spec, workspace_root=root, **options)

    # -- set-up ---------------------------------------------------------------------------------------
    def _onnx_runner(self, workspace_root, calibration):
        from . import onnx_cache
        from .onnx_backend import export_onnx, open_graph

        fp32 = self.spec.fingerprint(self.located, "fp32")

        def export(path: Path) -> None:
            model = backbones.build(self.spec, allow_download=self._allow_download)
            model.with_map = model.has_map
            export_onnx(model, path, fingerprint=fp32)

        runner, self.exported = onnx_cache.cached_graph(fp32, export,
                                                        lambda path: open_graph(path, fp32, threads=self.threads))
        if self.precision == "fp32":
            return runner
        from .quantize import quantize_int8
        from .store import FeatureStore

        fp32_path = runner.path
        runner.close()
        int8_path = FeatureStore(workspace_root, self.spec.name, self.fingerprint).dir / "model-int8.onnx"
        quantized = open_graph(int8_path, self.fingerprint, threads=self.threads) if int8_path.exists() else None
        if quantized is None:
            if not calibration:
                raise InputError(f"the int8 graph of {self.spec.name} is calibrated on a workspace's images; "
                                 "run pixelmine extract --precision int8 first")
            quantize_int8(fp32_path, int8_path, self.spec, calibration, fingerprint=self.fingerprint)
            quantized = open_graph(int8_path, self.fingerprint, threads=self.threads)
        return quantized

    def describe(self) -> str:
        return self.runner.describe()

    @property
    def has_map(self) -> bool:
        return bool(getattr(self.runner, "has_map", False))

    def close(self) -> None:
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            self._decode_pool = None
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- embedding ------------------------------------------------------------------------------------
    def embed_pixels(self, pixels: np.ndarray, *, with_map: bool = False) -> Embeddings:
        """Outputs for uint8 crops (n, S, S, 3) as :func:`decoding.decode_chunk` makes them."""
        if with_map and not self.has_map:
            raise InputError(f"backbone {self.spec.name} exposes no convolutional feature map (e.g. a vision "
                             "transformer); class activation maps need a CNN backbone")
        features, logits, feature_map = self.runner.run(pixels, with_map=with_map)
        return Embeddings(np.asarray(features, dtype=np.float32), logits, feature_map, rows=list(range(len(pixels))))

    def decoder(self, tasks, *, workers: int | None = None, chunk_size: int = 8) -> Decoder:
        """A :class:`Decoder` of ``(key, path)`` tasks with this backbone's crop, running ahead of inference."""
        return Decoder(tasks, self.crop, workers=default_workers(len(tasks)) if workers is None else workers,
                       chunk_size=chunk_size)

    def embed_files(self, paths, *, with_map: bool = False, batch_size: int = 16, progress=False) -> Embeddings:
        """Outputs for image files; a file that fails to decode is an ``errors`` entry, never an exception.

        A few files (a server's batch) are decoded side by side in threads of this process; many go through
        the crash-isolated process pool of :class:`Decoder`, running ahead of inference."""
        parts: list[Embeddings] = []
        errors: dict[int, str] = {}
        for rows, pixels, chunk_errors in self.decode_files(paths, batch_size=batch_size, progress=progress):
            errors.update(chunk_errors)
            if rows:
                part = self.embed_pixels(pixels, with_map=with_map)
                part.rows = rows
                parts.append(part)
        return _concatenate(parts, errors, self.spec)

    def decode_files(self, paths, *, batch_size: int = 16, progress=False):
        """Yield ``(rows, crops (n, S, S, 3) uint8, {row: error})`` batches for image files, in order: the
        crops this backbone takes, for callers that run the network on views of them (test-time moves)."""
        tasks = [(str(row), os.fspath(path)) for row, path in enumerate(paths)]
        chunks = [self._decode_in_threads(tasks)] if len(tasks) < SMALL_JOB else \
            self.decoder(tasks, chunk_size=batch_size)
        report, close = resolve_progress(progress, f"{self.spec.name} features", unit="img")
        done = 0
        try:
            for chunk in chunks:
                errors = {int(key): message for key, _, message in chunk.errors}
                if not chunk.ids:
                    yield [], chunk.pixels, errors
                for start in range(0, len(chunk.ids), batch_size):
                    yield ([int(key) for key in chunk.ids[start:start + batch_size]],
                           chunk.pixels[start:start + batch_size], errors if start == 0 else {})
                done += len(chunk.ids) + len(chunk.errors)
                report(done, len(tasks))
        finally:
            close()

    def _decode_in_threads(self, tasks):
        if self._decode_pool is None:
            self._decode_pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="pixelmine-decode")
        decoded = list(self._decode_pool.map(lambda task: decode_chunk([task], self.crop), tasks))
        ids = [key for chunk in decoded for key in chunk.ids]
        pixels = np.concatenate([chunk.pixels for chunk in decoded]) if decoded else \
            np.empty((0, self.crop.input_size, self.crop.input_size, 3), np.uint8)
        from .decoding import DecodedChunk

        return DecodedChunk(ids, pixels, [error for chunk in decoded for error in chunk.errors])


def _concatenate(parts: list[Embeddings], errors: dict[int, str], spec) -> Embeddings:
    if not parts:
        return Embeddings(np.zeros((0, spec.feature_dim or 0), np.float32), None, None, [], errors)
    return Embeddings(
        np.concatenate([p.features for p in parts]),
        None if parts[0].logits is None else np.concatenate([p.logits for p in parts]),
        None if parts[0].feature_map is None else np.concatenate([p.feature_map for p in parts]),
        [row for p in parts for row in p.rows], errors)
