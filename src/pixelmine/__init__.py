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


def ingest(sources=None, *, workspace=None, manifest=None, progress="auto", **options):
    """Ingest into a workspace (``workspace`` path, or $PIXELMINE_WORKSPACE). See ``Workspace.ingest``."""
    with open_workspace(workspace) as ws:
        return ws.ingest(sources, manifest=manifest, progress=progress, **options)


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
    "ingest",
    "open_workspace",
]
