"""One image, named however the user names it: ``show(ws, image)`` behind ``pixelmine show IMAGE``.

``image`` is resolved like ``pixelmine similar``'s query (:func:`pixelmine.search.query.resolve`): an image
id or a unique prefix of one, a path the catalog has seen, or any file. A catalogued image is answered with
:func:`pixelmine.browse.get_image`, exactly what ``GET /images/{id}`` answers; a file the catalog has not
seen is validated like ingest would (nothing is written), tagged by the backbone's own classifier, and
predicted by the newest model, in the same shape.
"""

from __future__ import annotations

import os

from .browse import get_image, image_prediction
from .defaults import DEFAULT_BACKBONE
from .errors import InputError, PixelmineError

# Statuses of a file that is no image at all: nothing to show but an error.
_NOT_AN_IMAGE = ("empty_file", "not_an_image", "unreadable")


def show(ws, image: str, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None) -> dict:
    """Everything known about one image: :func:`pixelmine.browse.get_image`'s answer, plus ``resolved``
    (``{"input", "as", "path"}``; ``as`` is "id", "path", "file-catalogued" or "file-new").

    InputError (one line) for an unknown id, an ambiguous prefix (naming some matches), or a file that is
    not an image."""
    from .search.query import resolve

    try:
        query = resolve(ws.catalog, image)
    except OSError as exc:  # the file exists but cannot be read to hash it
        raise InputError(f"cannot read {str(image)!r} ({exc.strerror or exc}); check the path and its "
                         "permissions") from exc
    resolved = {"input": str(image), "as": query.source, "path": query.path}
    if query.image_id is not None:
        detail = get_image(ws, query.image_id, backbone=backbone, model=model)
    else:
        detail = describe_file(ws, query.path, backbone=backbone, model=model)
    return {**detail, "resolved": resolved}


def describe_file(ws, path: str, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None) -> dict:
    """A file the catalog has not seen, in :func:`pixelmine.browse.get_image`'s shape: its properties as
    ingest's validation finds them, no paths, findings or corrections, fresh tags and a prediction."""
    from .ingest import validate_file
    from .ingest.sniff import sniff

    path = os.path.abspath(path)
    record = validate_file(path)
    if record.status != "ok" and record.format is None:
        with open(path, "rb") as handle:
            head = handle.read(512)
        if record.status in _NOT_AN_IMAGE or sniff(head).image_format is None:
            reason = (record.error or record.status).split(";")[0]  # what it is; the fix is ingest's
            raise InputError(f"{path!r} is not an image pixelmine can read ({reason}); "
                             "give an image file, an image id, or a catalogued path")
    item = {"id": record.sha256, "size": record.size, "format": record.format, "width": record.width,
            "height": record.height, "mode": record.mode, "status": record.status, "error": record.error,
            "split": None, "original_label": None, "correction": None, "label": None,
            "bit_depth": record.bit_depth, "orientation": record.orientation, "frames": record.frames,
            "phash": record.phash, "metadata": {}, "first_seen": None, "updated_at": None,
            "paths": [], "findings": [], "corrections": []}
    if record.status == "ok":
        item["tags"] = file_tags(ws, path, backbone)
        item["prediction"] = image_prediction(ws, path, model=model)
    else:
        note = f"the file's status is {record.status!r}, so it cannot be decoded for this"
        item["tags"] = {"backbone": backbone, "items": [], "note": note}
        item["prediction"] = {"model": None, "note": note}
    return item


def file_tags(ws, path: str, backbone: str = DEFAULT_BACKBONE) -> dict:
    """Top-5 tags of an image file, computed now by ``backbone``'s classifier through the one embedder
    (the decode and preprocessing of extraction), in :func:`pixelmine.browse.image_tags`' shape."""
    try:
        from . import backbones
        from .features.embedder import Embedder
        from .features.extract import top_k
    except ImportError as exc:
        return {"backbone": backbone, "items": [], "note": f"computing tags needs the ml extra ({exc}); "
                                                           "install it with: pip install 'pixelmine[ml]'"}
    try:
        spec = backbones.get(backbone, root=ws.root)
        labels = spec.label_names()
        if not labels:
            return {"backbone": spec.name, "items": [],
                    "note": f"backbone {spec.name} has no classifier, so it gives no tags"}
        with Embedder(spec, workspace_root=ws.root) as embedder:
            embedded = embedder.embed_files([path])
    except (PixelmineError, ImportError) as exc:  # unknown backbone, weights not here, no onnxruntime
        return {"backbone": backbone, "items": [], "note": str(exc)}
    if embedded.errors:
        return {"backbone": spec.name, "items": [], "note": f"cannot decode the file for {spec.name}: "
                                                            f"{embedded.errors[0]}"}
    indices, probs = top_k(embedded.logits)
    items = [{"label": labels[i], "probability": round(float(p), 4)}
             for i, p in zip(indices[0], probs[0]) if i >= 0]  # rounded like the cached tags
    return {"backbone": spec.name, "items": items, "note": None}
