"""An exported file (deploy/export.py) behind the same surface as a workspace model, so that the server and
``predict``-style callers can use it in place of one:

    model = ExportedModel("shipped/")               # the folder, its model.onnx, or its classifier.json
    model.predict(["photo.jpg"])                     # Predictions, as Model.predict gives them
    with model.embedder(threads=2) as runner:        # one resident ONNX Runtime session
        probs, novelty, rows, errors = model.probabilities(runner, paths)

Each file is decoded as pixelmine decodes (EXIF orientation applied, big JPEGs at a reduced draft size:
``decode_for_export``), so the probabilities are the exported file's own. An exported file carries no
training vectors, so there is no novelty score (None). Nothing here imports the export machinery until an
export is actually used: ``pixelmine serve`` with a workspace model pays nothing for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import InputError, NotFittedError

SIDECAR = "classifier.json"  # deploy.export.SIDECAR_FILE, repeated so that this check needs no import of it
BATCH_PIXELS = 1 << 23  # pixels per ONNX Runtime call: same-size images are batched up to this, then split


def export_location(name: str | os.PathLike | None) -> Path | None:
    """The export that ``name`` (``--model``) names, as an absolute path, or None when it names a workspace
    model. An export is a folder holding classifier.json, or a .onnx file (or the classifier.json) with
    the other beside it. A name that can only be a path (a separator, ``.onnx``) but is no export raises
    NotFittedError saying what an export is, rather than being looked up as a model name that cannot exist."""
    if name is None:
        return None
    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.is_dir() and (path / SIDECAR).is_file():
        return path.resolve()
    if path.is_file() and (path.suffix == ".onnx" or path.name == SIDECAR) and (path.parent / SIDECAR).is_file():
        return path.resolve()
    if "/" in text or os.sep in text or path.suffix == ".onnx":
        from .export import read_sidecar

        read_sidecar(path)  # raises with the fix; only reached when it is not a complete export
        return path.resolve()
    return None


def sidecar_path(export: Path) -> Path:
    """classifier.json of an export (its mtime says when the export was rewritten)."""
    return (export if export.is_dir() else export.parent) / SIDECAR


def source_model(export: Path, root) -> str | None:
    """The workspace model ``export`` was made from, when the workspace at ``root`` has it; else None.

    The name comes from a file the user pointed at, so it is only accepted as a plain folder name of
    ``models/``: a crafted sidecar must not lead the server to load model pickles from elsewhere."""
    from ..learn import artifacts

    try:
        name = read_source_name(export)
    except (OSError, ValueError):
        return None
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
        return None
    return name if (artifacts.model_path(root, name) / artifacts.MODEL_FILE).is_file() else None


def read_source_name(export: Path):
    import json

    return json.loads(sidecar_path(export).read_text()).get("model")


class ExportedRunner:
    """One resident ONNX Runtime session of an exported file (what a model's embedder is to the server)."""

    def __init__(self, graph: Path, *, threads: int | None = None):
        from .export import ExportedSession

        self.path = Path(graph)
        self.session = ExportedSession(graph, threads=threads)

    def run(self, images: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("this exported-model session is closed")
        return self.session.run(images)

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session with its last reference

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ExportedModel:
    """An export folder with the surface the server's Predictor and ``predict`` callers use: ``name``,
    ``classes``, ``min_confidence``, ``min_margin``, ``embedder``, ``probabilities``, ``predict``."""

    kind = "exported"

    def __init__(self, path: str | os.PathLike):
        from .export import read_sidecar

        try:
            graph, sidecar = read_sidecar(path)
        except NotFittedError:
            raise
        except (OSError, ValueError) as exc:  # unreadable or not JSON: JSONDecodeError is a ValueError
            raise InputError(f"the export's {SIDECAR} in {str(path)!r} cannot be read ({type(exc).__name__}: "
                             f"{exc}); export the model again: pixelmine export --model NAME --output DIR") from exc
        try:
            self.source: str = str(sidecar["model"])
            self.precision: str = str(sidecar["precision"])
            self.classes: list[str] = [str(c) for c in sidecar["classes"]]
            uncertainty = sidecar.get("uncertainty") or {}
            self.min_confidence = float(uncertainty.get("min_confidence", 0.0))
            self.min_margin = float(uncertainty.get("min_margin", 0.0))
            self.min_side = int(sidecar["input"]["jpeg_draft_min_side"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the export's {SIDECAR} in {str(path)!r} lacks {exc} or has it in another form "
                             "(written by another pixelmine?); export the model again: pixelmine export --model "
                             "NAME --output DIR") from exc
        self.path = Path(path)
        self.graph = graph
        self.sidecar = sidecar
        self.name = f"{self.source} (exported {self.precision})"

    def __repr__(self) -> str:
        return f"ExportedModel({self.name!r}, {len(self.classes)} classes, {str(self.graph)!r})"

    def embedder(self, *, threads: int | None = None) -> ExportedRunner:
        """A resident session of the exported file (the caller closes it, or uses ``with``)."""
        return ExportedRunner(self.graph, threads=threads)

    def probabilities(self, embedder: ExportedRunner, files: list[str], *, progress=False):
        """(probs (n, K), None, rows, {row: error}) for image ``files``, like Model.probabilities; a file
        that cannot be decoded or run is an error entry, never an exception."""
        images: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for row, path in enumerate(files):
            try:
                images[row] = decode(path, self.min_side)
            except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, ...
                errors[row] = decode_error(exc)
        results: dict[int, np.ndarray] = {}
        for batch in batches(images):
            results.update(self._run(embedder, batch, images, errors))
        rows = sorted(results)
        if not rows:
            return np.zeros((0, len(self.classes))), None, [], errors
        return np.stack([results[r] for r in rows]).astype(np.float64), None, rows, errors

    def _run(self, embedder: ExportedRunner, batch: list[int], images, errors) -> dict[int, np.ndarray]:
        try:
            probs = embedder.run(np.stack([images[r] for r in batch]))
        except Exception as exc:  # noqa: BLE001 - one image the graph refuses must not lose the others
            if len(batch) > 1:
                found: dict[int, np.ndarray] = {}
                for row in batch:
                    found.update(self._run(embedder, [row], images, errors))
                return found
            errors[batch[0]] = (f"the exported model could not run on this image ({type(exc).__name__}: {exc}); "
                                "check the file, or re-export it as PNG or JPEG")
            return {}
        return dict(zip(batch, probs))

    def predict(self, paths, *, top_k: int = 3, progress=False):
        """Predictions for image files, folders or glob patterns, as Model.predict gives them (no novelty)."""
        from ..learn.embed import file_ids
        from ..learn.predictions import Predictions, build_predictions, error_prediction, expand_inputs

        if top_k < 1:
            raise InputError(f"top_k must be >= 1; got {top_k!r}")
        entries = expand_inputs(paths)
        files = [path for path, problem in entries if problem is None]
        image_ids, errors = file_ids(files)
        todo = [r for r in range(len(files)) if image_ids[r] is not None]
        built = {}
        if todo:
            with self.embedder() as runner:
                probs, novelty, rows, failed = self.probabilities(runner, [files[r] for r in todo])
            errors.update({todo[k]: message for k, message in failed.items()})
            ok = [todo[k] for k in rows]
            built = dict(zip(ok, build_predictions(probs, novelty, self.classes, top_k=min(top_k, len(self.classes)),
                                                   min_confidence=self.min_confidence, min_margin=self.min_margin,
                                                   paths=[files[r] for r in ok],
                                                   image_ids=[image_ids[r] for r in ok])))
        result, row = Predictions(), 0
        for path, problem in entries:
            if problem is not None:
                result.append(error_prediction(path, problem))
                continue
            result.append(built.get(row) or error_prediction(path, errors.get(row, "not processed"), image_ids[row]))
            row += 1
        return result


def decode(path, min_side: int) -> np.ndarray:
    from .export import decode_for_export

    return decode_for_export(path, min_side)


def decode_error(exc: BaseException) -> str:
    """Why a file to predict could not be decoded, with the fix that fits a file the user just gave."""
    if isinstance(exc, FileNotFoundError):
        return "file not found; check the path"
    if isinstance(exc, PermissionError):
        return "permission denied reading the file; fix its permissions"
    return f"could not decode the image ({type(exc).__name__}: {exc}); check the file, or re-export it as PNG or JPEG"


def batches(images: dict[int, np.ndarray]) -> list[list[int]]:
    """Rows grouped by image size (one graph call takes one size), each group cut to BATCH_PIXELS."""
    by_shape: dict[tuple, list[int]] = {}
    for row, image in images.items():
        by_shape.setdefault(image.shape, []).append(row)
    out = []
    for shape, rows in by_shape.items():
        per_call = max(1, BATCH_PIXELS // max(1, shape[0] * shape[1]))
        out.extend(rows[k:k + per_call] for k in range(0, len(rows), per_call))
    return out
