"""Loading a saved model: ``model.json`` says which kind it is, and that kind's class opens it."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, NotFittedError
from . import artifacts
from .finetuned_model import FinetunedModel
from .model import Model
from .probe_model import ProbeModel

MODEL_CLASSES: dict[str, type[Model]] = {"probe": ProbeModel, "finetune": FinetunedModel}


def open_model(catalog, root, directory: str | Path) -> Model:
    """The model saved in ``directory`` (a ``models/<name>/`` folder of the workspace at ``root``)."""
    kind = artifacts.read_info(Path(directory)).get("kind")
    if kind not in MODEL_CLASSES:
        raise InputError(f"model folder {str(directory)!r} holds a model of unknown kind {kind!r} (known: "
                         f"{', '.join(MODEL_CLASSES)}); it was saved by another pixelmine: upgrade pixelmine")
    return MODEL_CLASSES[kind](catalog, root, directory)


def load_model(catalog, root, name: str | None = None) -> Model:
    """The model ``name`` of the workspace at ``root``; ``None`` loads the most recently trained one."""
    name = name or artifacts.default_model_name(root)
    directory = artifacts.model_path(root, name)
    if not directory.is_dir():
        known = [m["name"] for m in artifacts.list_models(root)]
        raise NotFittedError(f"no model named {name!r} in workspace {str(root)!r}; "
                             + (f"models: {', '.join(known)}" if known else "train one with: pixelmine train"))
    return open_model(catalog, root, directory)
