"""Read the workspace page by page: images with filters, one image in full, findings, duplicate groups.

One image in full (:func:`get_image`) is what ``GET /images/{id}`` and ``pixelmine show`` both answer.

Every listing is paged in SQL (``limit``/``offset``) and returns ``{"total", "limit", "offset", "items"}``,
so a catalog of 100,000 images costs one indexed query per page. Labels are *effective* labels: the
catalog label with people's corrections applied (:mod:`pixelmine.corrections`).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from .corrections import ImageNotFoundError, corrections
from .defaults import DEFAULT_BACKBONE
from .errors import InputError, NotFittedError, PixelmineError

MAX_PAGE = 500



def _latest(image_id_column: str) -> str:
    """Join the newest correction of each row's image as ``lc`` (one index probe per row, so a page of a
    100,000-image catalog stays cheap)."""
    return (f"LEFT JOIN label_corrections lc ON lc.id = "
            f"(SELECT MAX(c.id) FROM label_corrections c WHERE c.image_id = {image_id_column})")


_EFFECTIVE_LABEL = ("CASE WHEN lc.image_id IS NULL THEN i.label WHEN lc.action = 'ignore' THEN NULL "
                    "ELSE lc.new_label END")
# Images still on disk: every image has a path, so exclude those whose paths are all gone. The set of gone
# images is small and computed once per query, where a per-row EXISTS probe cost ~0.5 s per 100,000 images.
_PRESENT = ("i.id NOT IN (SELECT g.image_id FROM paths g WHERE g.present = 0 AND g.image_id IS NOT NULL AND "
            "NOT EXISTS (SELECT 1 FROM paths h WHERE h.image_id = g.image_id AND h.present = 1))")
_IMAGE_COLUMNS = ("i.id, i.size, i.format, i.width, i.height, i.mode, i.status, i.error, i.split, "
                  "i.label AS original_label, lc.action AS correction, "
                  f"{_EFFECTIVE_LABEL} AS label")


def check_page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}; got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise InputError(f"offset must be >= 0; got {offset!r}")


def latest_run_of_kind(ws, kind: str) -> int | None:
    """The newest completed discover run that produced findings of ``kind``."""
    from .discover.findings import latest_discover_run

    return latest_discover_run(ws.catalog, kind)


def finding_kinds(ws) -> list[dict]:
    """Finding kinds present in the catalog, with the number of flagged images in their newest run."""
    rows = ws.catalog.query(
        "SELECT f.kind, SUM(f.is_issue) AS issues, COUNT(*) AS scored FROM findings f "
        "JOIN (SELECT f2.kind AS kind, MAX(f2.run_id) AS run_id FROM findings f2 JOIN runs r ON r.id = f2.run_id "
        "      WHERE r.kind = 'discover' AND r.status = 'completed' GROUP BY f2.kind) l "
        "ON f.kind = l.kind AND f.run_id = l.run_id GROUP BY f.kind ORDER BY f.kind")
    return [{"kind": r["kind"], "issues": int(r["issues"] or 0), "scored": int(r["scored"])} for r in rows]


def list_images(ws, *, label: str | None = None, split: str | None = None, status: str | None = None,
                finding: str | None = None, cluster: str | None = None, limit: int = 60, offset: int = 0) -> dict:
    """Images still on disk, filtered, one page. ``finding``: only images that the newest discover run
    flags with that kind; ``cluster``: images of that cluster (from the newest ``cluster`` findings)."""
    check_page(limit, offset)
    where, params = [_PRESENT], []
    if status is not None:
        where.append("i.status = ?")
        params.append(status)
    if split is not None:
        where.append("i.split = ?")
        params.append(split)
    if label is not None:
        where.append(f"{_EFFECTIVE_LABEL} = ?")
        params.append(label)
    if finding is not None:
        run_id = latest_run_of_kind(ws, finding)
        where.append("EXISTS (SELECT 1 FROM findings f WHERE f.image_id = i.id AND f.run_id = ? AND f.kind = ? "
                     "AND f.is_issue = 1)")
        params += [run_id if run_id is not None else -1, finding]
    if cluster is not None:
        run_id = latest_run_of_kind(ws, "cluster")
        where.append("EXISTS (SELECT 1 FROM findings f WHERE f.image_id = i.id AND f.run_id = ? AND "
                     "f.kind = 'cluster' AND CAST(json_extract(f.details, '$.cluster') AS TEXT) = ?)")
        params += [run_id if run_id is not None else -1, str(cluster)]
    body = f"FROM images i {_latest('i.id')} WHERE {' AND '.join(where)}"
    total = ws.catalog.query(f"SELECT COUNT(*) {body}", params)[0][0]
    rows = ws.catalog.query(f"SELECT {_IMAGE_COLUMNS} {body} ORDER BY i.id LIMIT ? OFFSET ?", [*params, limit, offset])
    return {"total": int(total), "limit": limit, "offset": offset, "items": [dict(r) for r in rows]}


def facets(ws) -> dict:
    """The values each gallery filter can take: labels, splits, statuses, finding kinds, clusters."""
    q = ws.catalog.query
    labels = [r[0] for r in q(f"SELECT DISTINCT {_EFFECTIVE_LABEL} FROM images i {_latest('i.id')} "
                              f"WHERE {_PRESENT} AND i.status = 'ok' ORDER BY 1") if r[0] is not None]
    splits = [r[0] for r in q("SELECT DISTINCT split FROM images WHERE split IS NOT NULL ORDER BY 1")]
    statuses = [r[0] for r in q(f"SELECT DISTINCT status FROM images i WHERE {_PRESENT} ORDER BY 1")]
    cluster_run = latest_run_of_kind(ws, "cluster")
    clusters = [] if cluster_run is None else [str(r[0]) for r in q(
        "SELECT DISTINCT json_extract(details, '$.cluster') FROM findings WHERE run_id = ? AND kind = 'cluster' "
        "AND json_extract(details, '$.cluster') IS NOT NULL ORDER BY 1", (cluster_run,))]
    return {"labels": labels, "splits": splits, "statuses": statuses,
            "findings": [k["kind"] for k in finding_kinds(ws)], "clusters": clusters}


def get_image(ws, image_id: str, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None) -> dict:
    """One image in full: properties, every path, its findings in the newest runs, its correction history,
    its top-5 ImageNet tags from the cached ``backbone`` features (:func:`image_tags`) and the prediction of
    ``model`` (default: the newest; :func:`image_prediction`). A stage not run yet leaves its section empty
    with a ``note`` naming the command, so the rest is still answered."""
    rows = ws.catalog.query(f"SELECT {_IMAGE_COLUMNS}, i.bit_depth, i.orientation, i.frames, i.phash, i.metadata, "
                            f"i.first_seen, i.updated_at FROM images i {_latest('i.id')} "
                              f"WHERE i.id = ?", (image_id,))
    if not rows:
        raise ImageNotFoundError(f"no image with id {image_id!r} in the catalog; ids are the sha256 of the file, "
                                 "as listed by GET /images")
    item = dict(rows[0])
    item["metadata"] = json.loads(item["metadata"])
    item["paths"] = [dict(r) for r in ws.catalog.query(
        "SELECT path, present, label, source FROM paths WHERE image_id = ? ORDER BY present DESC, path", (image_id,))]
    item["findings"] = [
        {"kind": r["kind"], "score": r["score"], "is_issue": bool(r["is_issue"]), "details": json.loads(r["details"]),
         "run_id": r["run_id"]}
        for r in ws.catalog.query(
            "SELECT f.* FROM findings f JOIN (SELECT kind, MAX(run_id) AS run_id FROM findings WHERE image_id = ? "
            "GROUP BY kind) l ON f.kind = l.kind AND f.run_id = l.run_id WHERE f.image_id = ? ORDER BY f.score",
            (image_id, image_id))]
    item["corrections"] = corrections(ws.catalog, image_id, limit=50)
    item["tags"] = image_tags(ws, image_id, backbone, status=item["status"])
    present = next((p["path"] for p in item["paths"] if p["present"]), None)
    if item["status"] != "ok":
        # Predicting would only decode the file again to fail (loading the backbone first, for seconds).
        item["prediction"] = {"model": None, "note": f"the image's status is {item['status']!r}, so there is "
                                                     "nothing to predict from"}
    elif present is None:
        item["prediction"] = {"model": None, "note": "no copy of the image is on disk any more to predict from"}
    else:
        item["prediction"] = image_prediction(ws, present, model=model)
    return item


def image_tags(ws, image_id: str, backbone: str = DEFAULT_BACKBONE, *, status: str | None = None) -> dict:
    """``{"backbone", "items": [{"label", "probability"}, ...] best first, "note"}``: the image's top-5
    ImageNet tags as :meth:`Workspace.tags` gives them; ``note`` says why ``items`` is empty."""
    from .backbones import get as get_backbone
    from .features.tags import tags_by_image

    if status not in (None, "ok"):
        return {"backbone": backbone, "items": [],
                "note": f"only images with status 'ok' get features; this one is {status!r}"}
    try:
        features = ws.features(backbone)
        labels = get_backbone(backbone, root=ws.root).label_names()
    except PixelmineError as exc:
        return {"backbone": backbone, "items": [], "note": str(exc)}
    if image_id not in set(features.ids):
        return {"backbone": features.backbone, "items": [],
                "note": f"no {backbone} features for this image yet; run: pixelmine extract --backbone {backbone}"}
    # One row through the same function as Workspace.tags, which would compute every image's tags first
    # (1.1 s for 100,000 images here, against 0.03 s for the one row, on each request of GET /images/{id}).
    tags = tags_by_image(features.subset([image_id]), labels)[image_id]
    note = None if tags else f"backbone {features.backbone} has no classifier, so its features carry no tags"
    return {"backbone": features.backbone, "items": [{"label": label, "probability": prob} for label, prob in tags],
            "note": note}


def image_prediction(ws, path: str, *, model: str | None = None, top_k: int = 3) -> dict:
    """``{"model", "note", **Prediction}``: ``model``'s prediction (default: the newest model) for the image
    file at ``path``, through :meth:`Model.predict` (cached features when the workspace has them). Without a
    model, or when the model cannot be used here, ``note`` says why and what to run."""
    try:
        loaded = ws.model(model)
    except NotFittedError as exc:
        return {"model": None, "note": str(exc)}
    try:
        (row,) = loaded.predict([path], top_k=top_k)
    except (PixelmineError, ImportError) as exc:  # e.g. other backbone weights here, or no PyTorch
        return {"model": loaded.name, "note": f"model {loaded.name!r} cannot predict here: {exc}"}
    return {"model": loaded.name, "note": None, **asdict(row)}


def list_findings(ws, *, kind: str | None = None, issues_only: bool = True, run_id: int | None = None,
                  limit: int = 50, offset: int = 0) -> dict:
    """Findings of the newest discover run (that has ``kind``), worst first, with each image's label and
    newest correction, so a reviewer sees what was already decided."""
    check_page(limit, offset)
    if run_id is None:
        from .discover.findings import latest_discover_run

        run_id = latest_discover_run(ws.catalog, kind)
    if run_id is None:
        return {"total": 0, "limit": limit, "offset": offset, "run_id": None, "items": []}
    where, params = ["f.run_id = ?"], [run_id]
    if kind is not None:
        where.append("f.kind = ?")
        params.append(kind)
    if issues_only:
        where.append("f.is_issue = 1")
    body = (f"FROM findings f LEFT JOIN images i ON i.id = f.image_id {_latest('f.image_id')} "
                              f"WHERE {' AND '.join(where)}")
    total = ws.catalog.query(f"SELECT COUNT(*) {body}", params)[0][0]
    rows = ws.catalog.query(
        f"SELECT f.image_id, f.kind, f.score, f.is_issue, f.details, {_EFFECTIVE_LABEL} AS label, "
        f"lc.action AS correction {body} ORDER BY f.score ASC, f.image_id LIMIT ? OFFSET ?", [*params, limit, offset])
    items = [{**dict(r), "is_issue": bool(r["is_issue"]), "details": json.loads(r["details"])} for r in rows]
    return {"total": int(total), "limit": limit, "offset": offset, "run_id": run_id, "items": items}


_GROUP_KEYS = ("group", "group_id", "duplicate_group")


def duplicate_groups(ws, *, limit: int = 20, offset: int = 0) -> dict:
    """Groups of near-duplicate images (newest ``near_duplicate`` findings, grouped by their group id in
    ``details``), largest first; then exact duplicates (identical bytes under several paths)."""
    check_page(limit, offset)
    groups: list[dict] = []
    run_id = latest_run_of_kind(ws, "near_duplicate")
    if run_id is not None:
        members: dict[str, list[dict]] = {}
        for r in ws.catalog.query(
                f"SELECT f.image_id, f.score, f.details, {_EFFECTIVE_LABEL} AS label FROM findings f "
                f"LEFT JOIN images i ON i.id = f.image_id {_latest('f.image_id')} "
                "WHERE f.run_id = ? AND f.kind = 'near_duplicate' ORDER BY f.score", (run_id,)):
            details = json.loads(r["details"])
            key = next((str(details[k]) for k in _GROUP_KEYS if details.get(k) is not None), r["image_id"])
            members.setdefault(key, []).append({"image_id": r["image_id"], "score": r["score"], "label": r["label"],
                                                "keeper": bool(details.get("is_keeper")),
                                                "reason": details.get("reason")})
        groups += [{"group": key, "kind": "near_duplicate", "images": items}
                   for key, items in sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0])) if len(items) > 1]
    for r in ws.catalog.query(
            "SELECT image_id, GROUP_CONCAT(path, char(10)) AS paths, COUNT(*) AS n FROM paths "
            "WHERE present = 1 AND image_id IS NOT NULL GROUP BY image_id HAVING n > 1 ORDER BY n DESC, image_id"):
        groups.append({"group": r["image_id"], "kind": "exact_duplicate",
                       "images": [{"image_id": r["image_id"], "path": p, "score": 0.0, "label": None}
                                  for p in sorted(r["paths"].split("\n"))]})
    return {"total": len(groups), "limit": limit, "offset": offset, "items": groups[offset:offset + limit]}


def list_runs(ws, *, kind: str | None = None, limit: int = 50) -> list[dict]:
    """Recorded runs (ingest, extract, train, discover, ...), newest first."""
    check_page(limit, 0)
    return ws.catalog.runs(kind, limit)


def latest_report(ws):
    """Path of the newest HTML report in ``reports/``; NotFittedError (with the command) when there is none."""
    from .errors import NotFittedError

    folder = ws.root / "reports"
    reports = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    if not reports:
        raise NotFittedError(f"no report in workspace {str(ws.root)!r} yet; run: pixelmine report")
    return reports[0]


def cluster_map(ws, *, limit: int = 100_000) -> dict:
    """The 2-D map of the collection (``Workspace.map2d()``, written by ``pixelmine clusters``): one point
    per image with x, y, its cluster (newest ``cluster`` findings) and its effective label. Raises
    NotFittedError (with the command) when no map was computed yet."""
    check_page(1, 0)
    if limit < 1:
        raise InputError(f"limit must be >= 1; got {limit!r}")
    mapped = ws.map2d()
    ids = [str(i) for i in mapped.ids]
    n = min(limit, len(ids))
    run_id = latest_run_of_kind(ws, "cluster")
    info: dict[str, tuple] = {}
    for start in range(0, n, 500):
        chunk = ids[start:min(n, start + 500)]
        marks = ",".join("?" * len(chunk))
        for r in ws.catalog.query(
                f"SELECT i.id, {_EFFECTIVE_LABEL} AS label, json_extract(f.details, '$.cluster') AS cluster "
                f"FROM images i {_latest('i.id')} "
                "LEFT JOIN findings f ON f.image_id = i.id AND f.kind = 'cluster' AND f.run_id = ? "
                f"WHERE i.id IN ({marks})", [run_id if run_id is not None else -1, *chunk]):
            info[r["id"]] = (r["label"], None if r["cluster"] is None else str(r["cluster"]))
    points = [{"image_id": ids[k], "x": round(float(mapped.xy[k][0]), 5), "y": round(float(mapped.xy[k][1]), 5),
               "label": info.get(ids[k], (None, None))[0], "cluster": info.get(ids[k], (None, None))[1]}
              for k in range(n)]
    return {"total": len(ids), "method": mapped.method, "points": points}


def explain_image(ws, image_id: str, *, model: str | None = None, label: str | None = None):
    """The :class:`~pixelmine.trust.explain.Explanation` of a catalogued image by ``model`` (default: the
    newest): ImageNotFoundError for an unknown id, NotFittedError when no file of it can be read."""
    from .thumbnails import decodable_paths

    paths = decodable_paths(ws, image_id, "it cannot be explained")
    if not paths:
        raise NotFittedError(f"no file of image {image_id[:12]} is present any more; run pixelmine ingest again")
    explanation = ws.model(model).explain(paths[:1], label=label)[0]
    if not explanation.ok:
        raise NotFittedError(f"image {image_id[:12]} cannot be explained: {explanation.error}")
    explanation.image_id = image_id
    return explanation


def fairness(ws, *, by: list[str] | None = None, model: str | None = None, min_group: int = 20,
             refresh: bool = False) -> dict:
    """The model's group table (``fairness.json``) for the columns ``by`` (None: every column that varies):
    the saved one when it covers them and ``refresh`` is false, else measured now (and saved)."""
    from .trust.fairness import load_fairness

    trained = ws.model(model)
    saved = None if refresh else load_fairness(trained)
    if saved is not None and saved.reports and saved.reports[0].min_group == min_group:
        have = [r.column for r in saved.reports]
        if by is None and saved.by is None:
            return saved.to_dict()
        if by is not None and set(by) <= set(have):
            result = saved.to_dict()
            result["reports"] = [r for r in result["reports"] if r["column"] in by]
            return result
    return ws.fairness(by, model=trained.name, min_group=min_group, progress=False).to_dict()


def zero_shot(ws, *, labels=None, from_labels: bool = False, as_labels: bool = False, min_probability: float = 0.5,
              shown: int = 60) -> dict:
    """Run zero-shot labelling; its summary and the first ``shown`` predictions (most confident first)."""
    result = ws.zero_shot(labels, from_labels=from_labels, as_labels=as_labels, min_probability=min_probability)
    return zero_shot_result(ws, run_id=result.run_id, limit=shown)


def zero_shot_result(ws, *, run_id: int | None = None, label: str | None = None, limit: int = 60,
                     offset: int = 0) -> dict:
    """The newest (or ``run_id``'s) zero-shot result: summary and its predictions, most confident first,
    optionally of one predicted ``label``; NotFittedError when none was run."""
    from .learn.zero_shot import load_zero_shot

    check_page(limit, offset)
    result = load_zero_shot(ws.root, run_id)
    if result is None:
        raise NotFittedError("no zero-shot labelling yet; run: pixelmine zero-shot --labels \"cat,dog\"")
    if label is not None and label not in result.labels:
        raise InputError(f"{label!r} is not one of the zero-shot labels: {', '.join(map(repr, result.labels))}")
    predictions = sorted((p for p in result.predictions() if label is None or p["label"] == label),
                         key=lambda p: -p["probability"])
    return {**result.summary(), "total": len(predictions), "limit": limit, "offset": offset,
            "items": predictions[offset:offset + limit]}


def recent_events(ws, *, limit: int = 50, types: tuple[str, ...] | None = None) -> dict:
    """The newest ``limit`` events of the catalog's event log (watch arrivals, uploads, drift), newest first,
    with the latest drift report."""
    check_page(limit, 0)
    latest = ws.catalog.latest_event_id()
    found: list[dict] = []
    start = latest
    while start > 0 and len(found) < limit:  # walk back in steps until enough events of these types
        start = max(0, start - 4 * limit)
        found = ws.catalog.events_after(start, limit=latest - start, types=types)
        if start == 0:
            break
    drift = ws.catalog.events_after(max(0, latest - 5000), limit=5000, types=("drift",))
    return {"latest_id": latest, "items": list(reversed(found))[:limit], "drift": drift[-1] if drift else None}
