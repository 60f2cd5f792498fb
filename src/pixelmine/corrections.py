"""Label corrections made by people (web UI, API, CLI), stored in the catalog's ``label_corrections`` table.

A correction never touches the user's files or the ingested label: it is a row on top of them, and the
newest row per image wins. Later stages read :func:`effective_labels` instead of the raw catalog label.

Actions:
    relabel  the image's label is ``new_label`` from now on
    accept   the current label is right (a reviewed finding); the label stays as it is
    ignore   exclude the image from training and discovery (``new_label`` is NULL)

    >>> from pixelmine.corrections import record_correction, effective_labels
    >>> record_correction(ws.catalog, image_id, "relabel", "scratch", source="api")
    >>> effective_labels(ws.catalog)["3f2a..."]
    'scratch'
"""

from __future__ import annotations

import unicodedata

from .catalog import utc_now
from .errors import InputError

ACTIONS = ("relabel", "accept", "ignore")
SOURCES = ("cli", "api", "web", "zero-shot")  # zero-shot: pseudo-labels of pixelmine zero-shot --as-labels
MAX_LABEL_LENGTH = 200


class ImageNotFoundError(InputError, LookupError):
    """An image id that the catalog does not hold."""


def check_label(label) -> str:
    """A label as typed by a person: stripped, non-empty, at most 200 characters, no control characters."""
    if not isinstance(label, str):
        raise InputError(f"a label must be text; got {type(label).__name__}")
    text = label.strip()
    if not text:
        raise InputError("the new label is empty; give the class name, e.g. 'scratch'")
    if len(text) > MAX_LABEL_LENGTH:
        raise InputError(f"the new label is {len(text)} characters long; at most {MAX_LABEL_LENGTH} are allowed")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise InputError(f"the new label {text!r} contains control characters; use printable text only")
    return text


def record_correction(catalog, image_id: str, action: str, new_label: str | None = None, *, source: str = "api") -> dict:
    """Record one correction of ``image_id``; returns the stored row (with the image's effective label).

    ``relabel`` needs ``new_label``; ``accept`` and ``ignore`` take none.
    Raises ImageNotFoundError for an id the catalog does not hold and InputError for a bad action or label.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    if action == "relabel":
        if new_label is None:
            raise InputError("action 'relabel' needs the new label (field 'label')")
        new_label = check_label(new_label)
    elif new_label is not None:
        raise InputError(f"action {action!r} takes no label; use action 'relabel' to change the label")
    rows = catalog.query("SELECT label FROM images WHERE id = ?", (image_id,))
    if not rows:
        raise ImageNotFoundError(f"no image with id {image_id!r} in the catalog; ids are the sha256 of the file, "
                                 "as listed by GET /images or pixelmine files --json")
    old_label = current_label(catalog, image_id, rows[0]["label"])
    if action == "accept":
        new_label = old_label
    created = utc_now()
    with catalog.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO label_corrections(image_id, old_label, new_label, action, source, created_at) "
            "VALUES (?,?,?,?,?,?)", (image_id, old_label, new_label, action, source, created))
        correction_id = int(cursor.lastrowid)
    return {"id": correction_id, "image_id": image_id, "old_label": old_label, "new_label": new_label,
            "action": action, "source": source, "created_at": created,
            "effective_label": None if action == "ignore" else new_label, "ignored": action == "ignore"}


def current_label(catalog, image_id: str, catalog_label: str | None = None) -> str | None:
    """The label an image carries now: its newest relabel/accept correction's label, else the catalog's.
    (An ``ignore`` excludes the image but does not erase its label: accepting it later restores that label.)"""
    rows = catalog.query("SELECT new_label FROM label_corrections WHERE image_id = ? AND action != 'ignore' "
                            "ORDER BY id DESC LIMIT 1", (image_id,))
    if rows:
        return rows[0]["new_label"]
    if catalog_label is None:
        rows = catalog.query("SELECT label FROM images WHERE id = ?", (image_id,))
        catalog_label = rows[0]["label"] if rows else None
    return catalog_label


def latest_corrections(catalog, image_ids=None) -> dict[str, dict]:
    """The newest correction of each image (of ``image_ids``, or of every corrected image)."""
    sql = ("SELECT c.* FROM label_corrections c JOIN (SELECT image_id, MAX(id) AS id FROM label_corrections "
           "{where} GROUP BY image_id) m ON c.id = m.id")
    result: dict[str, dict] = {}
    if image_ids is None:
        rows = catalog.query(sql.format(where=""))
    else:
        ids = list(image_ids)
        rows = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows += catalog.query(sql.format(where=f"WHERE image_id IN ({','.join('?' * len(chunk))})"), chunk)
    for row in rows:
        result[row["image_id"]] = dict(row)
    return result


def corrections(catalog, image_id: str | None = None, *, limit: int = 100, offset: int = 0) -> list[dict]:
    """Correction history, newest first (of one image, when given)."""
    where, params = ("WHERE image_id = ?", [image_id]) if image_id else ("", [])
    return [dict(r) for r in catalog.query(
        f"SELECT * FROM label_corrections {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*params, limit, offset])]


def effective_labels(catalog, *, include_ignored: bool = False) -> dict[str, str | None]:
    """``{image_id: label}`` for every usable (status ok) image: the catalog label with corrections applied.

    Images whose newest correction is ``ignore`` are left out (``include_ignored=True`` keeps them, with
    label None). Unlabelled images map to None. This is what training and discovery should read.
    """
    labels = {row["id"]: row["label"] for row in catalog.query(
        "SELECT id, label FROM images i WHERE status = 'ok' AND "
        "EXISTS (SELECT 1 FROM paths p WHERE p.image_id = i.id AND p.present = 1)")}
    for image_id, row in latest_corrections(catalog).items():
        if image_id not in labels:
            continue
        if row["action"] == "ignore":
            if include_ignored:
                labels[image_id] = None
            else:
                del labels[image_id]
        else:
            labels[image_id] = row["new_label"]
    return labels


def ignored_ids(catalog) -> set[str]:
    """Images whose newest correction says: exclude from training and discovery."""
    return {i for i, row in latest_corrections(catalog).items() if row["action"] == "ignore"}
