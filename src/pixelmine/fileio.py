"""Small file helpers every stage shares: atomic writes, content hashes, JSON for numpy values.

Atomic: a file is written under a temporary name in its own folder and renamed over the target only when
complete, so a reader (or a run resumed after a kill) sees the old file or the new one, never half of one.
The temporary file is removed when writing fails, and results are created 0644 (``mkstemp`` makes 0600;
workspace files are meant to be read by others).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

HASH_BLOCK = 1 << 20  # bytes read at a time when hashing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (torch.save, ONNX, faiss);
    renamed over ``path`` when the block ends without an error, removed otherwise. A full, read-only or
    failing disk becomes one :class:`~pixelmine.errors.StorageError` naming the file and the fix."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix or path.suffix)
        os.close(handle)
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        storage = storage_error(exc, path)
        if storage is not None:
            raise storage from exc
        raise


# errno values that mean "this storage cannot take the write", as opposed to a problem with one input file
STORAGE_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only", errno.EIO: "failing"}


def storage_error(exc: BaseException, path: str | os.PathLike):
    """A :class:`~pixelmine.errors.StorageError` for ``exc`` when it is a full, read-only or failing disk
    (``OSError`` with such an errno, wherever it was raised); None for anything else."""
    from .errors import StorageError

    if isinstance(exc, StorageError):
        return None
    cause = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    return StorageError(storage_message(path, STORAGE_ERRNOS[cause.errno]), path=str(path), errno=cause.errno)


def storage_message(path: str | os.PathLike, problem: str) -> str:
    """What went wrong writing ``path`` and what to do, in one line."""
    where = Path(path)
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    if problem == "full":
        try:
            free = shutil.disk_usage(existing).free
        except OSError:
            free = None
        what = f"no space left on the disk to write {str(path)!r}" + (
            f" ({free / 1e6:.1f} MB free there)" if free is not None else "")
    elif problem == "read-only":
        what = f"cannot write {str(path)!r}: its file system is read-only"
    else:
        what = (f"an I/O error while writing {str(path)!r} (a failing disk, or a network mount that went "
                "away)")
    return (f"{what}. Everything finished before is kept and no half-written file was left; free some space "
            "(or move the workspace: --workspace / $PIXELMINE_WORKSPACE; the model cache: $PIXELMINE_CACHE), "
            "then run the same command again: it resumes where it stopped")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, mode: str = "wb", suffix: str = "") -> Iterator[IO]:
    """``with atomic_writer(path) as handle: handle.write(...)``: ``path`` appears complete or not at all."""
    with atomic_path(path, suffix=suffix) as tmp, \
            open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as out:
        yield out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_writer(path) as out:
        out.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_writer(path, mode="w") as out:
        out.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=json_default) + "\n")


def atomic_save_npz(path: str | os.PathLike, *, compressed: bool = True, **arrays) -> Path:
    import numpy as np

    with atomic_writer(path, suffix=".npz") as out:
        (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return Path(path)


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_writer(path, suffix=".npy") as out:
        np.save(out, array)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the image id of an image file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def json_default(value):
    """``json.dumps(default=...)`` for what pixelmine's results hold: numpy scalars and arrays, sets, paths."""
    try:
        import numpy as np
    except ImportError:  # a base install without numpy never produces numpy values
        np = None
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return str(value)


def stat_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it cannot be stat'ed: what says a catalogued file is unchanged."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
