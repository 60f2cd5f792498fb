"""Text search and zero-shot labels, offline: real photos whose content is known (scikit-image's samples),
MobileNetV2's ImageNet tags and the sentence-model concepts; HTTP and CLI included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pixelmine
from pixelmine.cli import main
from pixelmine.errors import InputError, NotFittedError

skimage_data = pytest.importorskip("skimage.data")

# name -> (what it shows, its label in the workspace: None = unlabelled)
PHOTOS = {"chelsea": ("cat", "animal"), "coffee": ("coffee", "object"), "rocket": ("rocket", "object"),
          "astronaut": ("person", None), "hubble_deep_field": ("space", None), "camera": ("camera", "object")}


def photo_folder(root):
    for name, (_, label) in PHOTOS.items():
        pixels = getattr(skimage_data, name)()
        image = Image.fromarray(pixels).convert("RGB")
        image.thumbnail((320, 320))
        folder = root / label if label else root  # files beside the class folders have no label
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{name}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("words")
    source = photo_folder(tmp / "images")
    ws = pixelmine.open_workspace(tmp / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    ws.extract(progress=False)
    names = {r["id"]: r["path"].rsplit("/", 1)[-1].split(".")[0] for r in ws.images()}
    yield ws, names
    ws.close()


def test_search_before_extract_names_the_command(tmp_path):
    ws = pixelmine.open_workspace(tmp_path / "ws")
    with pytest.raises(NotFittedError, match="pixelmine extract --backbone mobilenet_v2"):
        ws.search_text("a cat")


@pytest.mark.parametrize("query, expected", [("a cat", "chelsea"), ("a cup of coffee", "coffee"),
                                             ("a space rocket", "rocket")])
def test_the_offline_search_ranks_the_right_photo_first(photos, query, expected):
    ws, names = photos
    result = ws.search_text(query, k=3)
    assert result.method == "imagenet-concepts" and result.backbone == "mobilenet_v2"
    assert result.known and result.hits
    assert names[result.hits[0].image_id] == expected, [(names[h.image_id], h.score) for h in result.hits]
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


def test_a_query_the_fallback_cannot_see_says_so(photos):
    ws, _ = photos
    result = ws.search_text("textile with a hole")
    assert not result.known and "CLIP" in result.note


def test_bad_queries_are_clear_errors(photos):
    ws, _ = photos
    with pytest.raises(InputError, match="empty"):
        ws.search_text("   ")
    with pytest.raises(InputError, match="k must be"):
        ws.search_text("a cat", 0)


def test_zero_shot_offline_labels_the_photos_and_measures_against_labels(photos):
    ws, names = photos
    result = ws.zero_shot("cat, coffee, rocket, camera")
    predicted = {names[i]: label for i, label in zip(result.ids, result.predicted)}
    assert predicted["chelsea"] == "cat" and predicted["coffee"] == "coffee" and predicted["rocket"] == "rocket"
    assert np.allclose(result.probs.sum(axis=1), 1.0)
    # the labels the images carry (animal / object) are not in the list: predicted, not measured
    assert result.evaluation is None and any("outside the list" in note for note in result.notes)
    assert set(result.concepts) == {"cat", "coffee", "rocket", "camera"}
    run = ws.runs("zero-shot")[0]
    assert run["id"] == result.run_id and run["status"] == "completed"
    assert (ws.root / "zero-shot" / f"run-{result.run_id}.npz").exists()


def test_zero_shot_as_labels_records_corrections_only_for_unlabelled_images(photos, tmp_path):
    ws, names = photos
    before = {r["id"]: r["label"] for r in ws.images()}
    result = ws.zero_shot(["cat", "space shuttle", "coffee"], as_labels=True, min_probability=0.0)
    assert result.pseudo_labels >= 1
    from pixelmine.corrections import corrections

    made = [c for c in corrections(ws.catalog) if c["source"] == "zero-shot"]
    assert made and all(before[c["image_id"]] is None for c in made)
    assert {r["id"]: r["label"] for r in ws.images()} == before  # the ingested labels are untouched


def test_bad_label_lists_are_clear_errors(photos):
    ws, _ = photos
    with pytest.raises(InputError, match="empty label"):
        ws.zero_shot("cat,,dog")
    with pytest.raises(InputError, match="repeats"):
        ws.zero_shot("cat,Cat")
    with pytest.raises(InputError, match="cannot see 'qzxv'"):
        ws.zero_shot("cat,qzxv")
    with pytest.raises(InputError, match="one of the two"):
        ws.zero_shot()


def test_zero_shot_from_the_labels_the_images_carry_is_measured(photos):
    ws, _ = photos
    from pixelmine.corrections import effective_labels

    carried = {i: label for i, label in effective_labels(ws.catalog).items() if label is not None}
    result = ws.zero_shot(from_labels=True)
    assert result.labels == sorted(set(carried.values())) and {"animal", "object"} <= set(result.labels)
    assert result.evaluation is not None and result.evaluation.n == len(carried)
    assert len(result.evaluation.confusion) == len(result.labels)


def test_the_cli_searches_and_labels(photos):
    ws, _ = photos
    runner = CliRunner()
    done = runner.invoke(main, ["search", "a cat", "-w", str(ws.root), "-k", "2", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["hits"][0]["path"].endswith("chelsea.jpg") and data["method"] == "imagenet-concepts"
    done = runner.invoke(main, ["search", "a cat", "-w", str(ws.root)])
    assert "matched ImageNet concepts" in done.output and "chelsea.jpg" in done.output
    done = runner.invoke(main, ["zero-shot", "-w", str(ws.root), "--labels", "cat,coffee"])
    assert done.exit_code == 0, done.output and "zero-shot (imagenet-concepts" in done.output
    done = runner.invoke(main, ["zero-shot", "-w", str(ws.root), "--labels", "cat,"])
    assert done.exit_code == 1 and "empty label" in done.output
