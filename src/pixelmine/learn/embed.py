"""Image ids of files to predict: the sha256 of their bytes, so a file the workspace has already embedded
reuses its cached vector. Embedding itself is :class:`pixelmine.features.embedder.Embedder`'s job."""

from __future__ import annotations

from ..fileio import sha256_file


def file_ids(files: list[str]) -> tuple[list[str | None], dict[int, str]]:
    """(sha256 per file or None, {row: why it could not be read})."""
    ids: list[str | None] = []
    errors: dict[int, str] = {}
    for row, path in enumerate(files):
        try:
            ids.append(sha256_file(path))
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
