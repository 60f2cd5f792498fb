"""One exception hierarchy for pixelmine.

    PixelmineError
    ├── InputError (ValueError)            a value the user gave is not usable
    │   └── SourceNotFoundError (FileNotFoundError)
    ├── WorkspaceError                     the workspace or its catalog cannot be used
    │   ├── SchemaVersionError             catalog written by a newer pixelmine
    │   └── StorageError                   disk full, read-only or failing while writing
    ├── NotFittedError (ValueError)        a stage needs an earlier stage's output
    └── MissingDependencyError (ImportError)  an optional package is not installed
        └── WeightsNotFoundError             pretrained weights are in no cache, no package, no download

Every message names the thing that is wrong, the value received, what is allowed, and the fix.
Each class also subclasses the matching builtin, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class PixelmineError(Exception):
    """Base class of every error pixelmine raises on purpose."""


class InputError(PixelmineError, ValueError):
    """A parameter, path or file given by the user cannot be used as it is."""


class SourceNotFoundError(InputError, FileNotFoundError):
    """A source path (folder, manifest, image) does not exist."""


class WorkspaceError(PixelmineError):
    """The workspace directory or its catalog cannot be opened or written."""


class SchemaVersionError(WorkspaceError):
    """The catalog was written by a newer pixelmine than this one."""


class StorageError(WorkspaceError):
    """Writing a workspace or cache file failed: the disk is full, read-only, or failing. Everything written
    before is intact; the same command resumes once the cause is fixed."""

    def __init__(self, message: str, path: str | None = None, errno: int | None = None):
        self.path = path
        self.errno = errno
        super().__init__(message)


class NotFittedError(PixelmineError, ValueError):
    """A stage was asked for output that an earlier stage has not produced yet."""


class MissingDependencyError(PixelmineError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""

    def __init__(self, package: str, feature: str, install: str | None = None):
        self.package = package
        self.feature = feature
        self.install = install or f"pip install {package}"
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed. "
            f"Install it with: {self.install}"
        )


class WeightsNotFoundError(MissingDependencyError):
    """Pretrained weights are not in a local cache, not in an installed package, and cannot be downloaded."""

    def __init__(self, message: str, package: str | None = None, install: str | None = None):
        self.package = package
        self.feature = "pretrained weights"
        self.install = install
        ImportError.__init__(self, message)
