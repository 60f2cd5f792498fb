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

# Extensions that are images, or that users commonly give images. Other files in a folder are skipped (and
# counted by extension in the ingest result, so nothing is left out silently), unless include patterns ask
# for them.
#
# A literal, not PIL.Image.registered_extensions(): what Pillow registers depends on which plugins happen
# to be imported (pillow-heif, olefile), and which files a folder walk lists must not. The set is
# Pillow 13's registered read extensions, plus:
#   .spi .spider  SPIDER (Pillow opens it by content but registers no extension; .spider is Pillow's own
#                 test-file name for it)
#   .jxl .svg     images pixelmine cannot decode: listed so that they are reported as unsupported_format,
#                 not skipped unseen; .ftex is the long spelling of Pillow's .ftc/.ftu
# and without these, which Pillow registers but which are not images in practice:
#   .ps           PostScript documents are pages of text (EPS figures, .eps, are kept)
#   .pdf .palm    Pillow only writes these
#   .mpg .mpeg    videos; Pillow reads only the header
#   .bufr .grib .h5 .hdf  scientific data containers; Pillow's plugins are stubs that decode nothing
#   .iim          IPTC metadata records; the plugin reads only the rare file that carries raw pixels
#   .fpx .mic     FlashPix / Image Composer: registered only when olefile is installed (pixelmine does not
#                 depend on it), and without it these OLE files sniff as Office documents
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".heic",
    ".heif", ".avif", ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".pcx", ".tga", ".psd", ".jp2", ".j2k",
    ".jpx", ".qoi", ".dds", ".sgi", ".rgb", ".icns", ".xbm", ".im", ".msp", ".fits", ".eps", ".svg",
    ".jxl", ".blp", ".ftex", ".dcx", ".gbr", ".wmf", ".emf", ".mpo", ".apng",
    # added from Pillow's registry: animations, cursors, float maps, sequences and rarer rasters
    ".fli", ".flc", ".cur", ".pfm", ".xpm", ".fit", ".ftc", ".ftu", ".j2c", ".jpc", ".jpf", ".bw", ".rgba",
    ".ras", ".icb", ".vda", ".vst", ".pxr", ".pcd", ".avifs", ".heics", ".heifs", ".hif", ".spi", ".spider",
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
    # Files a folder walk left out for their extension (no include patterns given): {".bin": 40, "": 2}
    skipped_by_extension: dict[str, int] = field(default_factory=dict)


def _matches(relpath: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = os.path.basename(relpath)
    if include and not any(fnmatch.fnmatch(relpath, pat) or fnmatch.fnmatch(name, pat) for pat in include):
        return False
    if any(fnmatch.fnmatch(relpath, pat) or fnmatch.fnmatch(name, pat) for pat in exclude):
        return False
    return True


def walk_folder(root: str, *, labels_from_folders: bool = False, include: Sequence[str] = (),
                exclude: Sequence[str] = (), skipped: dict[str, int] | None = None) -> Iterator[SourceItem]:
    """Files below ``root``, sorted, following directory symlinks once each (a loop is entered once).

    Without ``include`` only :data:`IMAGE_EXTENSIONS` are listed; ``skipped``, when given, counts the other
    files by lower-cased extension ("" for none). Files that ``exclude`` matches are not counted: the user
    left those out on purpose."""
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
        if not _matches(rel, include, exclude):
            continue
        ext = os.path.splitext(path)[1].lower()
        if not include and ext not in IMAGE_EXTENSIONS:
            if skipped is not None:
                skipped[ext] = skipped.get(ext, 0) + 1
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
            skipped: dict[str, int] = {}
            items = list(walk_folder(path, labels_from_folders=labels_from_folders, include=include, exclude=exclude,
                                     skipped=skipped))
            result.append(Source(key=path, kind="folder", items=items, complete=True, skipped_by_extension=skipped))
        elif os.path.lexists(path):
            loose.append(SourceItem(path=path))
        else:
            raise SourceNotFoundError(f"source {os.fspath(raw)!r} does not exist; give an existing folder or image file")
    if loose:
        result.append(Source(key="paths", kind="paths", items=loose, complete=False))
    return result
