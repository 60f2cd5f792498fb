"""Where the files come from: a folder (recursive), class subfolders as labels, a CSV/Parquet manifest,
or a list of paths. Each yields :class:`SourceItem` entries; nothing here opens an image."""

from __future__ import annotations

import csv
import fnmatch
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import InputError, SourceNotFoundError

# Extensions that are images, or that users commonly give images. Other files in a folder are ignored,
# unless include patterns ask for them.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".heic",
    ".heif", ".avif", ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".pcx", ".tga", ".psd", ".jp2", ".j2k",
    ".jpx", ".qoi", ".dds", ".sgi", ".rgb", ".icns", ".xbm", ".im", ".msp", ".fits", ".eps", ".svg",
    ".jxl", ".blp", ".ftex", ".dcx", ".gbr", ".wmf", ".emf", ".mpo", ".apng",
})

MANIFEST_EXTENSIONS = frozenset({".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson"})
PATH_COLUMNS = ("path", "file", "filename", "filepath", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "category", "target")


@dataclass(frozen=True)
class SourceItem:
    path: str  # absolute
    label: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A resolved source: its key in the catalog, and the items it lists."""

    key: str  # the folder or manifest path; 'paths' for an explicit list
    kind: str  # folder | manifest | paths
    items: list[SourceItem]
    complete: bool  # True when absent items of this key mean deleted files


def _matches(relpath: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = os.path.basename(relpath)
    if include and not any(fnmatch.fnmatch(relpath, pat) or fnmatch.fnmatch(name, pat) for pat in include):
        return False
    if any(fnmatch.fnmatch(relpath, pat) or fnmatch.fnmatch(name, pat) for pat in exclude):
        return False
    return True


def walk_folder(root: str, *, labels_from_folders: bool = False, include: Sequence[str] = (),
                exclude: Sequence[str] = ()) -> Iterator[SourceItem]:
    """Files below ``root``, sorted, following directory symlinks once each (a loop is entered once)."""
    root = os.path.abspath(root)
    seen_dirs: set[tuple[int, int]] = set()

    def visit(directory: str) -> Iterator[str]:
        try:
            st = os.stat(directory)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            return
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders: .DS_Store, .git, editor droppings
            try:
                if entry.is_dir(follow_symlinks=True):
                    yield from visit(entry.path)
                elif entry.is_file(follow_symlinks=True) or entry.is_symlink():
                    yield entry.path
            except OSError:
                yield entry.path  # let validation report it as unreadable

    for path in visit(root):
        rel = os.path.relpath(path, root)
        ext = os.path.splitext(path)[1].lower()
        if not include and ext not in IMAGE_EXTENSIONS:
            continue
        if not _matches(rel, include, exclude):
            continue
        label = None
        if labels_from_folders:
            parts = rel.split(os.sep)
            label = parts[0] if len(parts) > 1 else None
        yield SourceItem(path=path, label=label)


def _read_manifest_rows(manifest: str) -> list[dict]:
    ext = os.path.splitext(manifest)[1].lower()
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(manifest).to_pylist()
    if ext in (".csv", ".tsv", ".txt"):
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(8192)
            handle.seek(0)
            delimiter = "\t" if ext == ".tsv" or ("\t" in sample and "," not in sample) else ","
            return list(csv.DictReader(handle, delimiter=delimiter))
    if ext in (".jsonl", ".ndjson"):
        with open(manifest, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    raise InputError(f"manifest {manifest!r} has extension {ext!r}; use .csv, .tsv, .parquet or .jsonl")


def read_manifest(manifest: str, *, path_column: str | None = None, label_column: str | None = None,
                  include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[SourceItem]:
    """Rows of a CSV/TSV/Parquet/JSONL manifest. Relative paths resolve against the manifest's folder;
    columns other than path and label become metadata."""
    if not os.path.isfile(manifest):
        raise SourceNotFoundError(f"manifest {manifest!r} does not exist; give the path of a CSV or Parquet file")
    rows = _read_manifest_rows(manifest)
    if not rows:
        return
    columns = list(rows[0].keys())
    lowered = {c.lower().strip(): c for c in columns if c is not None}
    pcol = path_column or next((lowered[c] for c in PATH_COLUMNS if c in lowered), None)
    if pcol is None or pcol not in columns:
        raise InputError(f"manifest {manifest!r} has no path column (columns: {', '.join(map(str, columns))}); "
                         f"name one of them {PATH_COLUMNS[0]!r} or pass path_column= / --path-column")
    lcol = label_column or next((lowered[c] for c in LABEL_COLUMNS if c in lowered), None)
    if label_column and label_column not in columns:
        raise InputError(f"label column {label_column!r} is not in manifest {manifest!r} "
                         f"(columns: {', '.join(map(str, columns))})")
    base = os.path.dirname(os.path.abspath(manifest))
    for number, row in enumerate(rows, start=2):
        raw = row.get(pcol)
        if raw is None or str(raw).strip() == "":
            raise InputError(f"manifest {manifest!r} row {number} has an empty {pcol!r}; fill it in or delete the row")
        path = os.path.expanduser(str(raw).strip())
        path = os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))
        if not _matches(os.path.relpath(path, base), include, exclude):
            continue
        label = row.get(lcol) if lcol else None
        label = None if label is None or str(label).strip() == "" else str(label).strip()
        metadata = {k: _plain(v) for k, v in row.items() if k not in (pcol, lcol) and k is not None}
        yield SourceItem(path=path, label=label, metadata=metadata)


def _plain(value):
    """Manifest values as JSON-friendly scalars."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def resolve_sources(sources: str | os.PathLike | Iterable[str | os.PathLike] | None = None, *,
                    manifest: str | os.PathLike | None = None, labels_from_folders: bool = False,
                    include: Sequence[str] = (), exclude: Sequence[str] = (), path_column: str | None = None,
                    label_column: str | None = None) -> list[Source]:
    """Turn the user's arguments into sources. A folder is walked; a file is taken as one path."""
    result: list[Source] = []
    if manifest is not None:
        manifest = os.path.abspath(os.fspath(manifest))
        items = list(read_manifest(manifest, path_column=path_column, label_column=label_column,
                                   include=include, exclude=exclude))
        result.append(Source(key=manifest, kind="manifest", items=items, complete=True))
    if sources is None:
        if manifest is None:
            raise InputError("nothing to ingest: give a folder, image paths, or a manifest (--manifest FILE)")
        return result
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    loose: list[SourceItem] = []
    for raw in sources:
        path = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if os.path.isfile(path) and os.path.splitext(path)[1].lower() in MANIFEST_EXTENSIONS:
            items = list(read_manifest(path, path_column=path_column, label_column=label_column,
                                       include=include, exclude=exclude))
            result.append(Source(key=path, kind="manifest", items=items, complete=True))
        elif os.path.isdir(path):
            items = list(walk_folder(path, labels_from_folders=labels_from_folders, include=include, exclude=exclude))
            result.append(Source(key=path, kind="folder", items=items, complete=True))
        elif os.path.lexists(path):
            loose.append(SourceItem(path=path))
        else:
            raise SourceNotFoundError(f"source {os.fspath(raw)!r} does not exist; give an existing folder or image file")
    if loose:
        result.append(Source(key="paths", kind="paths", items=loose, complete=False))
    return result
