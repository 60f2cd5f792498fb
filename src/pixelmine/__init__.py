"""pixelmine: image knowledge discovery.

    >>> import pixelmine
    >>> ws = pixelmine.open_workspace("my-workspace")
    >>> result = ws.ingest("photos/", labels_from_folders=True)
    >>> ws.status()["files_by_status"]

Importing pixelmine loads neither torch nor any web framework; each stage imports what it needs.
"""

from ._version import __version__
from .errors import (
    InputError,
    MissingDependencyError,
    NotFittedError,
    PixelmineError,
    SchemaVersionError,
    SourceNotFoundError,
    WorkspaceError,
)
from .workspace import Workspace, open_workspace
from .defaults import DEFAULT_BACKBONE


def ingest(sources=None, *, workspace=None, manifest=None, progress="auto", **options):
    """Ingest into a workspace (``workspace`` path, or $PIXELMINE_WORKSPACE). See ``Workspace.ingest``."""
    with open_workspace(workspace) as ws:
        return ws.ingest(sources, manifest=manifest, progress=progress, **options)


def _workspace(workspace) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else open_workspace(workspace)


def extract(backbone: str = DEFAULT_BACKBONE, *, workspace=None, progress="auto", **options):
    """Compute (or reuse) the features of every ingested image; returns the FeatureSet:
    ``.ids`` (image ids) and ``.vectors`` (N x D float32, memory-mapped). See ``Workspace.extract``."""
    return _workspace(workspace).extract(backbone, progress=progress, **options).features()


def train(head: str | None = None, *, workspace=None, **options):
    """Train, evaluate and save a classifier (``workspace``: a Workspace, a path, or $PIXELMINE_WORKSPACE).

    Returns the model: ``model.predict(paths)``, ``model.evaluate()``. See ``Workspace.train``.
    """
    return _workspace(workspace).train(head, **options)


def load_model(workspace=None, name: str | None = None):
    """A trained model of ``workspace`` by name (default: the most recently trained)."""
    return _workspace(workspace).model(name)


__all__ = [
    "InputError",
    "MissingDependencyError",
    "NotFittedError",
    "PixelmineError",
    "SchemaVersionError",
    "SourceNotFoundError",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "extract",
    "ingest",
    "load_model",
    "open_workspace",
    "train",
]
