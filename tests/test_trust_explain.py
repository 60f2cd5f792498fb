"""Explanations and robustness on a planted cue: a bright square, anywhere in the image, alone decides the class.

The tiny_test backbone (a random CNN with an 8x8 feature map) is enough: a bright square lights up the
positions it covers, and a logistic probe learns which channels respond to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from imagefactory import photo
from PIL import Image

import pixelmine
from pixelmine.cli import main
from pixelmine.errors import InputError
from pixelmine.trust.explain import Explainer, explain
from pixelmine.trust.faithfulness import measure as measure_faithfulness
from pixelmine.trust.heads import linear_scores, torch_head
from pixelmine.trust.robust import measure as measure_robustness

SIDE = 96
SQUARE = 24


@pytest.fixture(scope="module")
def cue(tmp_path_factory):
    """(workspace, logreg model, {file name: (x, y) of the square's corner}, image root)."""
    root = tmp_path_factory.mktemp("cue")
    rng = np.random.default_rng(0)
    corners = {}
    for label in ("cue", "plain"):
        for k in range(40):
            pixels = np.asarray(photo(1000 + k + (0 if label == "cue" else 500), (SIDE, SIDE)), np.float32) * 0.5
            if label == "cue":
                y, x = (int(v) for v in rng.integers(8, SIDE - SQUARE - 8, size=2))
                pixels[y:y + SQUARE, x:x + SQUARE] = 255
                corners[f"{label}_{k:03d}.png"] = (x, y)
            path = root / "images" / label / f"{label}_{k:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
    ws = pixelmine.open_workspace(root / "ws")
    ws.ingest(root / "images", labels_from_folders=True, progress=False, workers=1)
    ws.extract("tiny_test", progress=False)
    model = ws.train("logreg", backbone="tiny_test", progress=False, search_budget_s=2.0, bootstrap=50, cv_folds=3)
    yield ws, model, corners, root / "images"
    ws.close()


def test_the_map_peaks_on_the_planted_cue(cue):
    _, model, corners, images = cue
    files = sorted((images / "cue").glob("*.png"))
    explanations = model.explain(files)
    hits = 0
    for e in explanations:
        assert e.ok and e.label == "cue" and e.method == "cam" and e.class_map.shape == (8, 8)
        assert 0.0 <= e.class_map.min() and e.class_map.max() == pytest.approx(1.0)
        i, j = np.unravel_index(np.argmax(e.class_map), e.class_map.shape)
        left, top, right, bottom = e.box
        cx, cy = left + (j + 0.5) * (right - left) / 8, top + (i + 0.5) * (bottom - top) / 8
        x, y = corners[Path(e.path).name]
        hits += (x - 6 <= cx <= x + SQUARE + 6) and (y - 6 <= cy <= y + SQUARE + 6)
    assert hits >= 0.9 * len(files)


def test_cam_on_onnx_equals_gradcam_through_pytorch(cue):
    _, model, _, images = cue
    files = [str(p) for p in sorted((images / "cue").glob("*.png"))[:6]]
    with Explainer(model) as cam, Explainer(model, method="grad-cam") as grad:
        a, b = cam.scores_for_files(files), grad.scores_for_files(files)
    assert cam.method == "cam" and grad.method == "grad-cam"
    np.testing.assert_allclose(np.stack(a.scores), np.stack(b.scores), atol=1e-4)
    np.testing.assert_allclose(np.stack(a.probs), np.stack(b.probs), atol=1e-5)


def test_the_grid_sums_to_the_class_score(cue):
    """CAM is a decomposition: summed over positions it gives the head's linear score less the bias."""
    ws, model, _, images = cue
    probe = model._probe_bundle()["head"]
    scores = linear_scores(probe)
    files = [str(p) for p in sorted((images / "plain").glob("*.png"))[:4]]
    with Explainer(model) as explainer:
        batch = explainer.scores_for_files(files)
    features = ws.features("tiny_test")
    vectors = features.vectors[features.rows([model.predict(files)[k].image_id for k in batch.rows])]
    expected = scores(vectors) - scores.bias
    np.testing.assert_allclose(np.stack(batch.scores).sum(axis=(2, 3)), expected, rtol=1e-4, atol=1e-4)


def test_torch_head_gives_the_probe_probabilities(cue):
    import torch

    _, model, _, _ = cue
    probe = model._probe_bundle()["head"]
    x = np.random.default_rng(1).normal(size=(20, probe.n_features_in_)).astype(np.float32)
    with torch.no_grad():
        got = torch_head(probe)(torch.from_numpy(x)).exp().numpy()
    np.testing.assert_allclose(got, probe.predict_proba(x), atol=1e-5)


def test_svm_head_in_torch_matches_predict_proba():
    import torch

    from pixelmine.learn.heads import LinearSVMProbe

    rng = np.random.default_rng(2)
    for n_classes in (2, 3):
        y = np.repeat(np.arange(n_classes), 30)
        X = rng.normal(size=(len(y), 8)) + y[:, None] * 1.5
        probe = LinearSVMProbe(C=0.1).fit(X, y)
        with torch.no_grad():
            got = torch_head(probe)(torch.from_numpy(X.astype(np.float32))).exp().numpy()
        np.testing.assert_allclose(got, probe.predict_proba(X), atol=1e-5)


def test_contrastive_map_and_a_named_class(cue):
    _, model, _, images = cue
    path = sorted((images / "cue").glob("*.png"))[0]
    own, other = model.explain([path])[0], model.explain([path], label="plain")[0]
    assert own.label == "cue" and own.runner_up == "plain" and own.contrastive_map is not None
    assert other.label == "plain" and other.runner_up == "cue" and other.probability < 0.5
    # evidence for "cue" and for "plain" are opposite for a binary logistic head: the maps differ
    assert not np.allclose(own.class_map, other.class_map)


def test_bad_input(cue, tmp_path):
    ws, model, _, images = cue
    with pytest.raises(InputError, match="no class 'zebra'.*cue, plain"):
        model.explain([sorted((images / "cue").glob("*.png"))[0]], label="zebra")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    results = model.explain([broken, sorted((images / "cue").glob("*.png"))[0]])
    assert not results[0].ok and "PNG or JPEG" in results[0].error
    assert results[1].ok
    knn = ws.train("knn", backbone="tiny_test", name="knn-cue", progress=False, search_budget_s=1.0, bootstrap=20,
                   cv_folds=3)
    with pytest.raises(InputError, match="logreg"):
        knn.explain([broken])


def test_faithfulness_card_beats_random_on_the_cue(cue):
    _, model, _, images = cue
    card = measure_faithfulness(model, sorted((images / "cue").glob("*.png"))[:20], steps=8)
    assert card.images == 20 and card.method == "cam"
    # the blurred square stays brighter than its background, so the margins are modest on this cue
    assert card.deletion["map"] < 0.9 * card.deletion["random"]
    assert card.deletion["map"] < card.deletion["centre"]
    assert card.insertion["map"] > card.insertion["random"]
    assert card.insertion["map"] > card.insertion["centre"]
    assert len(card.deletion_curves["map"]) == 9


def test_randomised_head_is_measured(cue):
    _, model, _, images = cue
    card = measure_faithfulness(model, sorted((images / "cue").glob("*.png"))[:10], steps=4)
    assert -1.0 <= card.random_head_correlation <= 1.0
    assert card.random_head_correlation < 0.9  # a random head does not reproduce the learned map


def test_robustness_report(cue):
    _, model, _, _ = cue
    report = measure_robustness(model, images=12, epsilons=(0.0, 2.0), steps=5)
    by = {(a["attack"], a["eps"]): a for a in report.attacks}
    assert by[("fgsm", 0.0)]["accuracy"] == report.clean["accuracy"]  # eps 0 changes nothing
    assert by[("pgd-5", 2.0)]["accuracy"] <= by[("fgsm", 0.0)]["accuracy"]
    assert set(report.corruptions) and all(len(per) == 5 for per in report.corruptions.values())
    assert 0.0 <= report.corruption_mean <= 1.0
    assert report.int8 is not None and report.int8["int8"] is not None


def test_cli_explain_json_and_overlays(cue, tmp_path):
    ws, model, _, images = cue
    path = sorted((images / "cue").glob("*.png"))[0]
    result = CliRunner().invoke(main, ["explain", str(path), "--model", model.name, "-w", str(ws.root), "--json",
                                       "--out", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)["explanations"][0]
    assert record["label"] == "cue" and np.asarray(record["map"]).shape == (8, 8)
    assert Image.open(record["overlay"]).size[0] >= 256  # small images are enlarged for legibility
    assert Path(record["contrastive_overlay"]).is_file()
    bad = CliRunner().invoke(main, ["explain", str(path), "--class", "zebra", "--model", model.name, "-w", str(ws.root)])
    assert bad.exit_code == 1 and "no class 'zebra'" in bad.output


def test_cli_evaluate_writes_the_card_the_report_shows(cue):
    ws, model, _, _ = cue
    result = CliRunner().invoke(main, ["explain", "--evaluate", "--images", "10", "--model", model.name,
                                       "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "deletion area" in result.output and (model.dir / "faithfulness.json").is_file()
    report = Path(ws.report(model=model.name)).read_text()
    assert "Faithfulness of the maps" in report and "randomised-head rank correlation" in report.lower()


def test_explain_function_keeps_missing_files_in_order(cue, tmp_path):
    _, model, _, images = cue
    good = sorted((images / "plain").glob("*.png"))[0]
    results = explain(model, [tmp_path / "missing.png", good])
    assert [r.ok for r in results] == [False, True]


def test_a_model_without_a_network_gets_an_error_naming_the_fix(tmp_path):
    from learnkit import FAST, labelled_workspace

    ws, *_ = labelled_workspace(tmp_path, {"a": 12, "b": 12})
    model = ws.train("logreg", **{k: v for k, v in FAST.items() if k != "auto"}, progress=False)
    with pytest.raises(InputError, match="no network for.*pixelmine train --backbone"):
        model.explain([ws.images()[0]["path"]])
    with pytest.raises(InputError, match="no network for"):
        measure_robustness(model, images=4)


def test_a_model_that_answers_one_class_is_called_out(cue, monkeypatch):
    from pixelmine.trust.pixels import ModelOnPixels

    _, model, _, _ = cue
    monkeypatch.setattr(ModelOnPixels, "probabilities",
                        lambda self, pixels: np.tile([0.9, 0.1], (len(pixels), 1)))
    report = measure_robustness(model, images=12, attacks=False, corruptions=False)
    assert any("answers 'cue' for 12 of 12" in note for note in report.notes)
