"""pixelmine show IMAGE: one image by id prefix, path or new file; the same answer as GET /images/{id}."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest
from click.testing import CliRunner
from imagefactory import write
from learnkit import image_folders
from PIL import Image
from servekit import BACKBONE, private_workspace, shared_base

import pixelmine
from pixelmine import browse
from pixelmine.cli import main
from pixelmine.corrections import record_correction


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """servekit's workspace (ingest, tiny_test features, a logreg model, every finder), copied so that the
    corrections written here stay here. The same base folder as test_serve_api: built once per session."""
    root = private_workspace(tmp_path_factory, "show")
    ws = pixelmine.open_workspace(root)
    yield ws, shared_base(tmp_path_factory) / "images"
    ws.close()


def one_path_image(ws, label: str) -> dict:
    """An ok image with that label and a single path (the planted copies have two)."""
    counts = {r["image_id"]: r["n"] for r in ws.catalog.query(
        "SELECT image_id, COUNT(*) AS n FROM paths GROUP BY image_id")}
    return next(r for r in ws.images() if r["label"] == label and counts[r["id"]] == 1)


def test_show_by_prefix_prints_label_paths_tags_and_prediction(built):
    ws, _ = built
    image = one_path_image(ws, "b")
    result = run("show", image["id"][:8], "-w", ws.root, "--backbone", BACKBONE)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"image {image['id']}" in text
    assert re.search(r"^  label\s+b$", text, re.MULTILINE) and re.search(r"^  status\s+ok$", text, re.MULTILINE)
    assert f"  {image['path']}  (label b)" in text
    tags = ws.tags(BACKBONE)[image["id"]]
    assert len(tags) == 5
    for label, probability in tags:
        assert re.search(rf"^\s+{label}\s+{probability:.3f}$", text, re.MULTILINE)
    model = ws.model()
    (expected,) = model.predict([image["path"]])
    assert f"prediction ({model.name})" in text
    assert f"  {expected.label}  {expected.probability:.3f}" in text
    assert "findings (newest run of each kind)" in text and "label_issue" in text
    assert "label corrections\n  - none" in text


def test_json_round_trips_and_is_what_the_http_route_answers(built):
    ws, _ = built
    image = one_path_image(ws, "a")
    result = run("show", image["id"][:10], "-w", ws.root, "--backbone", BACKBONE, "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload.pop("resolved") == {"input": image["id"][:10], "as": "id", "path": None}
    route = browse.get_image(ws, image["id"], backbone=BACKBONE)  # what GET /images/{id} returns
    assert payload == json.loads(json.dumps(route, default=str))
    # The sections it adds to the catalog's row, each computed by the library's own API:
    assert [(t["label"], t["probability"]) for t in payload["tags"]["items"]] == ws.tags(BACKBONE)[image["id"]]
    (expected,) = ws.model().predict([image["path"]])
    assert payload["prediction"]["label"] == expected.label and payload["prediction"]["note"] is None
    assert payload["prediction"]["probability"] == pytest.approx(expected.probability)
    assert payload["label"] == "a" and [p["path"] for p in payload["paths"]] == [image["path"]]


def test_catalogued_path_lists_every_path_and_a_copy_elsewhere_resolves_to_it(built, tmp_path):
    ws, images = built
    copy = images / "b" / "copy_of_a_000.jpg"  # planted: the same bytes as a/a_000.jpg
    payload = json.loads(run("show", copy, "-w", ws.root, "--backbone", BACKBONE, "--json").stdout)
    assert payload["resolved"]["as"] == "path"
    assert sorted(p["path"] for p in payload["paths"]) == sorted([str(images / "a" / "a_000.jpg"), str(copy)])
    assert {"exact_duplicate"} <= {f["kind"] for f in payload["findings"]}
    elsewhere = shutil.copy(copy, tmp_path / "downloaded.jpg")
    text = run("show", elsewhere, "-w", ws.root, "--backbone", BACKBONE).output
    assert f"image {payload['id']}" in text and "is not catalogued at this path, but the same bytes are" in text


def test_label_corrections_are_shown(built):
    ws, _ = built
    image = one_path_image(ws, "c")
    record_correction(ws.catalog, image["id"], "relabel", "a", source="cli")
    text = run("show", image["id"][:12], "-w", ws.root, "--backbone", BACKBONE).output
    assert re.search(r"^  label\s+a  \(corrected: relabel; originally c\)$", text, re.MULTILINE)
    assert re.search(r"^  \S+ \S+\s+relabel\s+c\s+a$", text, re.MULTILINE)


def test_a_new_file_is_hashed_tagged_and_predicted_without_being_catalogued(built, tmp_path):
    ws, _ = built
    image = one_path_image(ws, "a")
    fresh = tmp_path / "query.png"  # the same pixels in new bytes: the catalog has not seen this file
    with Image.open(image["path"]) as source:
        source.save(fresh)
    files_before = len(ws.files())
    result = run("show", fresh, "-w", ws.root, "--backbone", BACKBONE, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["resolved"] == {"input": str(fresh), "as": "file-new", "path": str(fresh)}
    assert payload["id"] == hashlib.sha256(fresh.read_bytes()).hexdigest()
    assert (payload["format"], payload["width"], payload["height"], payload["status"]) == ("PNG", 64, 48, "ok")
    assert payload["paths"] == payload["findings"] == payload["corrections"] == [] and payload["label"] is None
    # Tags computed now from the same pixels match the cached tags of the catalogued original.
    cached = dict(ws.tags(BACKBONE)[image["id"]])
    fresh_tags = {t["label"]: t["probability"] for t in payload["tags"]["items"]}
    assert fresh_tags.keys() == cached.keys()
    assert all(fresh_tags[k] == pytest.approx(cached[k], abs=2e-3) for k in cached)
    (expected,) = ws.model().predict([str(fresh)])
    assert payload["prediction"]["label"] == expected.label and payload["prediction"]["image_id"] == payload["id"]
    assert len(ws.files()) == files_before  # nothing was catalogued
    text = run("show", fresh, "-w", ws.root, "--backbone", BACKBONE).output
    assert f"not catalogued: {fresh}" in text and f"prediction ({ws.model().name})" in text


def test_bad_input_is_one_clear_line_and_a_nonzero_exit(built, tmp_path):
    ws, _ = built
    known = {r["id"] for r in ws.images(status=None)}
    unknown = next(p for p in (f"{n:04x}" for n in range(0xFFFF, 0, -1)) if not any(i.startswith(p) for i in known))
    with ws.catalog.transaction() as conn:  # two catalogued ids sharing the prefix: ambiguous
        for fake in (unknown + "0" * 60, unknown + "1" * 60):
            conn.execute("INSERT INTO images(id, size, status, first_seen, updated_at) VALUES (?, 1, 'ok', '', '')",
                         (fake,))
    try:
        cases = {
            unknown + "2": "neither a file nor a catalogued image id",
            unknown: f"prefix {unknown!r} matches 2 images ({unknown}00000000, {unknown}11111111, ...); give more",
            write(tmp_path / "notes.jpg", b"shopping list: milk, eggs\n"): "is not an image pixelmine can read "
                                                                           "(this is a text file, not an image)",
            tmp_path / "nowhere.jpg": "neither a file nor a catalogued image id",
        }
        for image, words in cases.items():
            result = run("show", image, "-w", ws.root, "--backbone", BACKBONE)
            assert result.exit_code == 1, (image, result.output)
            assert words in result.output and "Traceback" not in result.output
            assert len(result.output.strip().splitlines()) == 1
    finally:
        with ws.catalog.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id IN (?, ?)", (unknown + "0" * 60, unknown + "1" * 60))


def test_stages_not_run_yet_leave_a_note_naming_the_command(tmp_path):
    source = image_folders(tmp_path / "images", {"a": 2, "b": 2})
    write(source / "a" / "broken.jpg", b"not a photo, a note\n")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    good = ws.images()[0]
    text = run("show", good["path"], "-w", ws.root, "--backbone", BACKBONE).output
    assert "pixelmine extract --backbone tiny_test" in text and "pixelmine train" in text
    assert "findings (newest run of each kind)\n  - none" in text
    bad = run("show", source / "a" / "broken.jpg", "-w", ws.root, "--backbone", BACKBONE)
    assert bad.exit_code == 0  # catalogued: shown with its status and reason
    assert re.search(r"^  status\s+not_an_image: this is a text file", bad.output, re.MULTILINE)
    assert "only images with status 'ok' get features" in bad.output
    assert "status is 'not_an_image', so there is nothing to predict from" in bad.output
