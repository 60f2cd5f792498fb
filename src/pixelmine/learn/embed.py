"""Feature vectors of image files that are not (yet) in the workspace cache, for prediction.

This reuses the extraction pipeline (``pixelmine.features``: decode workers running ahead, ONNX Runtime or
PyTorch), so batch prediction runs as fast as extraction. It writes nothing to the catalog: predicting a
file does not ingest it. The vectors must come from the same backbone, weights, preprocessing and precision
as the model's training features (the feature fingerprint); otherwise the model refuses to guess.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from ..errors import InputError
from ..progress import resolve_progress

log = logging.getLogger(__name__)


def file_ids(files: list[str]) -> tuple[list[str | None], dict[int, str]]:
    """(sha256 per file or None, {row: why it could not be read})."""
    ids: list[str | None] = []
    errors: dict[int, str] = {}
    for row, path in enumerate(files):
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            ids.append(digest.hexdigest())
        except FileNotFoundError:
            ids.append(None)
            errors[row] = "file not found; check the path"
        except IsADirectoryError:
            ids.append(None)
            errors[row] = "this is a folder, not a file"
        except PermissionError:
            ids.append(None)
            errors[row] = "permission denied reading the file; fix its permissions"
        except OSError as exc:
            ids.append(None)
            errors[row] = f"cannot read the file ({exc.strerror or exc}); check the disk and the path"
    return ids, errors


def _precision_of(spec, fingerprint: str) -> str:
    from ..backbones import PRECISIONS

    located = spec.locate_weights()
    for precision in PRECISIONS:
        if spec.fingerprint(located, precision) == fingerprint:
            return precision
    raise InputError(f"the model was trained on {spec.name} features with fingerprint {fingerprint[:12]}, but "
                     f"{spec.name} here (weights {located.identity}) gives other features; install the same "
                     "backbone weights, or retrain the model: pixelmine train")


def embed_files(workspace_root, backbone: str, files: list[str], *, fingerprint: str, progress=False,
                batch_size: int = 16) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """({row: feature vector}, {row: error}) for image ``files``; a file that fails to decode is an error
    entry, never an exception."""
    from .. import backbones
    from ..features.decoding import CropSpec, Decoder
    from ..features.extract import SMALL_JOB, ExtractConfig, _make_runner, available_cores
    from ..features.store import FeatureStore

    spec = backbones.get(backbone)
    precision = _precision_of(spec, fingerprint)
    config = ExtractConfig(backbone=spec.name, precision=precision, batch_size=batch_size)
    store = FeatureStore(workspace_root, spec.name, fingerprint)
    tasks = [(str(row), os.fspath(path)) for row, path in enumerate(files)]
    runner = _make_runner(store, spec, config, available_cores(), tasks)
    pre = spec.preprocessing
    workers = 0 if len(tasks) < SMALL_JOB else max(1, available_cores() - 1)
    decoder = Decoder(tasks, CropSpec(pre.input_size, pre.resize, pre.interpolation), workers=workers,
                      chunk_size=batch_size)
    vectors: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    report, close = resolve_progress(progress, f"predict: {spec.name} features", unit="img")
    try:
        for chunk in decoder:
            for image_id, _, message in chunk.errors:
                errors[int(image_id)] = message.split("; re-export")[0] + "; check the file, or re-export it"
            if chunk.ids:
                features, _ = runner.run(chunk.pixels)
                for k, image_id in enumerate(chunk.ids):
                    vectors[int(image_id)] = np.asarray(features[k], dtype=np.float32)
            report(len(vectors) + len(errors), len(tasks))
    finally:
        close()
        runner.close()
    return vectors, errors
