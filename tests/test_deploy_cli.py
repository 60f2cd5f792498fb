"""pixelmine export as a user runs it (what it writes and prints, --json, what the parser and the library
refuse), and an exported file served: POST /predict answered by it with Model.predict's answer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from imagefactory import encoded, photo, save
from learnkit import tinted_workspace

from pixelmine.cli import main
from pixelmine.errors import NotFittedError

pytest.importorskip("onnxruntime")

FAST = {"search_budget_s": 2.0, "bootstrap": 50, "cv_folds": 3}
TINTS = {"red": (10, (200, 60, 50)), "green": (10, (60, 190, 70)), "blue": (10, (50, 70, 200))}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    ws = tinted_workspace(tmp_path_factory.mktemp("deploy-cli"), TINTS)
    ws.extract("tiny_test", progress=False)
    ws.train("knn", backbone="tiny_test", name="tiny-knn", progress=False, **FAST)
    ws.train("logreg", backbone="tiny_test", name="tiny-logreg", progress=False, **FAST)  # the newest
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def exported(tiny_ws, tmp_path_factory):
    """The export folder written by the command (--json), and the JSON it printed."""
    folder = tmp_path_factory.mktemp("shipped") / "shipped"
    result = run("export", "--model", "tiny-logreg", "--output", folder, "--json", "-w", tiny_ws.root)
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.output)


def test_export_writes_the_file_and_says_what_it_measured(tiny_ws, tmp_path):
    result = run("export", "--output", tmp_path / "out", "-w", tiny_ws.root)  # default: the newest model
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "classifier.json").is_file()
    sidecar = json.loads((tmp_path / "out" / "classifier.json").read_text())
    assert sidecar["model"] == "tiny-logreg"
    text = result.output
    assert "model.onnx" in text and " MB, fp32)" in text
    assert f"on n = {sidecar['metrics']['test']['n']} test images" in text and "test accuracy" in text
    assert "parity with Model.predict" in text and "docs/deploy.md" in text
    assert "ort.InferenceSession(" in text and f"pixelmine serve --model {tmp_path / 'out'}" in text


def test_export_json_is_the_result_and_matches_the_sidecar(exported):
    folder, payload = exported
    sidecar = json.loads((folder / "classifier.json").read_text())
    assert payload["path"] == str(folder / "model.onnx") and payload["precision"] == "fp32"
    assert payload["test"]["accuracy"] == sidecar["metrics"]["test"]["accuracy"]
    assert payload["test"]["n"] == sidecar["metrics"]["test"]["n"] > 0
    assert payload["parity"]["max_abs_diff"] <= 1e-4 and payload["size_bytes"] > 0


def test_int8_says_what_it_costs_against_the_original(tiny_ws, tmp_path):
    result = run("export", "--model", "tiny-logreg", "--precision", "int8", "--max-drop", "1", "--output",
                 tmp_path / "out", "-w", tiny_ws.root)
    assert result.exit_code == 0, result.output
    assert " MB, int8)" in result.output and "int8 against the original: accuracy" in result.output
    assert "(drop " in result.output


@pytest.mark.parametrize("option, value", [("--format", "tflite"), ("--precision", "int4")])
def test_unknown_format_and_precision_are_refused_by_the_parser(tiny_ws, tmp_path, option, value):
    result = run("export", "--model", "tiny-logreg", option, value, "--output", tmp_path / "out", "-w", tiny_ws.root)
    assert result.exit_code == 2 and value in result.output and "Invalid value" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_names_the_known_ones(tiny_ws, tmp_path):
    result = run("export", "--model", "nope", "--output", tmp_path / "out", "-w", tiny_ws.root)
    assert result.exit_code != 0
    assert "no model named 'nope'" in result.output and "tiny-logreg" in result.output and "tiny-knn" in result.output


def test_a_knn_head_is_refused_with_the_reason_and_writes_nothing(tiny_ws, tmp_path):
    result = run("export", "--model", "tiny-knn", "--output", tmp_path / "out", "-w", tiny_ws.root)
    assert result.exit_code != 0
    assert "k-NN head" in result.output and "--head logreg" in result.output
    assert not (tmp_path / "out").exists()


def test_the_exported_model_predicts_like_the_model_and_reports_bad_files(tiny_ws, exported, tmp_path):
    from pixelmine.deploy.served import ExportedModel, export_location

    folder, _ = exported
    model = tiny_ws.model("tiny-logreg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    other_size = tmp_path / "other-size.png"  # not the training images' size: a graph call of its own
    save(photo(3, (57, 71)), other_size)
    files = [row["path"] for row in model.test_rows()][:4] + [str(other_size)]
    for location in (folder, folder / "model.onnx"):
        served = ExportedModel(export_location(str(location)))
        assert served.name == "tiny-logreg (exported fp32)" and served.classes == model.classes
        got = served.predict(files + [str(broken), str(tmp_path / "missing.jpg")], top_k=3)
        for row, expected in zip(got, model.predict(files, top_k=3)):
            assert row.label == expected.label and row.image_id == expected.image_id
            assert row.probability == pytest.approx(expected.probability, abs=1e-4) and row.novelty is None
        assert "could not decode the image" in got[-2].error and got[-1].error.startswith("file not found")
    assert export_location("tiny-logreg") is None  # a model name stays a model name
    with pytest.raises(NotFittedError, match="not a pixelmine export.*pixelmine export"):
        export_location(str(tmp_path / "no-such-folder") + "/")


def test_serve_answers_predict_with_the_exported_file(tiny_ws, exported, tmp_path):
    from servekit import LiveServer

    pytest.importorskip("fastapi")
    folder = tmp_path / "served"
    shutil.copytree(exported[0], folder)
    model = tiny_ws.model("tiny-logreg")
    files = [row["path"] for row in model.test_rows()][:3]
    expected = model.predict(files, top_k=3)
    with LiveServer(tiny_ws.root, model=str(folder)) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        upload = [("file", (f"{k}.jpg", Path(path).read_bytes(), "image/jpeg")) for k, path in enumerate(files)]
        response = client.post("/predict", files=upload)
        assert response.status_code == 200, response.text
        for got, want in zip(response.json()["predictions"], expected):
            assert got["model"] == "tiny-logreg (exported fp32)" and got["error"] is None
            assert got["label"] == want.label and got["probability"] == pytest.approx(want.probability, abs=1e-4)
            assert got["image_id"] == want.image_id and got["novelty"] is None
        corrupt = client.post("/predict", files={"file": ("cut.jpg", encoded(photo(5, (200, 150)), "JPEG")[:600],
                                                          "image/jpeg")})
        assert corrupt.status_code == 422 and "truncated" in corrupt.json()["error"]
        # the routes that need a workspace model use the one the export was made from
        image_id = tiny_ws.images(status="ok")[0]["id"]
        detail = client.get(f"/images/{image_id}")
        assert detail.status_code == 200 and detail.json()["prediction"]["model"] == "tiny-logreg"
        explained = client.get(f"/images/{image_id}/explanation")
        assert explained.status_code == 200 and explained.json()["method"] == "cam"
        assert client.get("/suggestions", params={"pool": "all", "n": 3}).status_code == 200
        # exporting again into the served folder: the next batch is answered by the new file
        model.export(folder, precision="int8", max_drop=1.0)
        os.utime(folder / "classifier.json", ns=(0, 1))  # a new mtime even on a coarse-grained file system
        again = client.post("/predict", files=upload[:1]).json()["predictions"][0]
        assert again["model"] == "tiny-logreg (exported int8)" and again["label"] == expected[0].label


def test_serving_a_path_that_is_no_export_fails_at_start(tiny_ws, tmp_path):
    from pixelmine.serve import create_app

    pytest.importorskip("fastapi")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.onnx").write_bytes(b"")
    with pytest.raises(NotFittedError, match="needs model.onnx and classifier.json"):
        create_app(tiny_ws.root, token="t", model=str(tmp_path / "half"))
