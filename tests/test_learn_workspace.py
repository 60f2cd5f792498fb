"""Train / evaluate / predict through the workspace, on ingested images with planted feature structure."""

import csv
import json
import shutil

import numpy as np
import pytest
from imagefactory import photo, save
from learnkit import BACKBONE, FAST, FINGERPRINT, class_features, image_folders, labelled_workspace

import pixelmine
from pixelmine.errors import InputError, NotFittedError
from pixelmine.features import FeatureStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with 3 separable classes and a logistic-regression model trained on it."""
    tmp = tmp_path_factory.mktemp("trained")
    ws, ids, labels, vectors = labelled_workspace(tmp, {"a": 40, "b": 30, "c": 20})
    model = ws.train("logreg", progress=False, **FAST)
    return ws, ids, labels, vectors, model


def test_training_writes_a_complete_model(trained):
    ws, ids, labels, vectors, model = trained
    files = {p.name for p in model.dir.iterdir()}
    assert {"model.json", "config.json", "head.joblib", "metrics.json", "card.md", "oof.npz", "data.npz",
            "confusion_matrix.png", "confusion_matrix.json", "reliability.png"} <= files
    info = json.loads((model.dir / "model.json").read_text())
    assert info["classes"] == ["a", "b", "c"] and info["backbone"] == BACKBONE
    assert info["feature_fingerprint"] == FINGERPRINT and len(info["data_fingerprint"]) == 64
    assert model.info["test_metrics"]["accuracy"] == 1.0  # separable classes: every test image right
    metrics = model.metrics
    assert metrics["test"]["n"] == info["n_test"] > 0 and metrics["test"]["intervals"]["accuracy"][0] > 0.7
    assert metrics["search"]["trials"] and "C" in metrics["search"]["best_params"]
    assert "| a |" in model.card and "accuracy" in model.card
    run = ws.runs("train")[0]
    assert run["status"] == "completed" and run["metrics"]["accuracy"] == 1.0 and run["config"]["head"] == "logreg"


def test_every_labelled_image_gets_out_of_fold_probabilities(trained):
    ws, ids, labels, vectors, model = trained
    oof = ws.oof_probabilities(model.name)
    assert sorted(oof["ids"].tolist()) == sorted(ids)
    assert oof["probs"].shape == (len(ids), 3) and oof["classes"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(oof["probs"].sum(axis=1), 1.0, atol=1e-5)
    truth = np.searchsorted(oof["classes"], oof["labels"])
    assert (oof["probs"].argmax(axis=1) == truth).mean() > 0.95
    assert set(oof["folds"].tolist()) == {0, 1, 2}


def test_split_is_stored_in_the_catalog_and_reused(trained):
    ws, ids, labels, vectors, model = trained
    stored = {row["id"]: row["split"] for row in ws.images()}
    assert set(stored.values()) == {"train", "val", "test"}
    with np.load(model.dir / "data.npz") as data:
        assert dict(zip(data["ids"].tolist(), data["splits"].tolist())) == stored
    again = ws.train("knn", progress=False, **FAST)
    assert again.metrics["split"]["source"] == "random (stored)"
    assert {row["id"]: row["split"] for row in ws.images()} == stored
    resplit = ws.split(seed=7, backbone=BACKBONE)
    assert resplit.source == "random" and dict(zip(resplit.ids, resplit.splits.tolist())) != stored
    ws.split(seed=0, backbone=BACKBONE)  # back to the split the module's other tests expect
    assert {row["id"]: row["split"] for row in ws.images()} == stored


def test_evaluate_matches_training_metrics_and_saves_figures(trained):
    ws, ids, labels, vectors, model = trained
    result = model.evaluate(n_bootstrap=50)
    assert result.metrics["accuracy"] == model.metrics["test"]["metrics"]["accuracy"]
    assert result.n == model.info["n_test"]
    assert (model.dir / "evaluation.json").exists() and (model.dir / "evaluation_confusion_matrix.png").exists()
    assert ws.runs("evaluate")[0]["status"] == "completed"
    rows = ws.images()[:6]
    on_files = model.evaluate([r["path"] for r in rows], [r["label"] for r in rows], n_bootstrap=0, save=False)
    assert on_files.n == 6 and on_files.metrics["accuracy"] == 1.0
    with pytest.raises(InputError, match="the given labels include classes the model was not trained on: 'owl'"):
        model.evaluate([rows[0]["path"]], ["owl"], save=False)


def test_predict_files_from_the_cache_with_top_k_and_error_rows(trained, tmp_path):
    ws, ids, labels, vectors, model = trained
    rows = ws.images()
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 not really a jpeg")
    inputs = [rows[0]["path"], str(tmp_path / "missing.jpg"), rows[1]["path"]]
    predictions = model.predict(inputs, top_k=2)
    assert [p.path for p in predictions] == [rows[0]["path"], str(tmp_path / "missing.jpg"), rows[1]["path"]]
    assert predictions[0].label == rows[0]["label"] and predictions[2].label == rows[1]["label"]
    assert predictions[1].error == "file not found; check the path" and predictions[1].uncertain
    assert len(predictions[0].top_k) == 2 and predictions[0].top_k[0]["label"] == predictions[0].label
    assert predictions.errors == 1
    out = tmp_path / "predictions.csv"
    predictions.write(out)
    table = list(csv.DictReader(out.open()))
    assert [r["label"] for r in table] == [rows[0]["label"], "", rows[1]["label"]]
    assert table[1]["error"] == "file not found; check the path" and table[0]["top2_label"]
    predictions.write(tmp_path / "predictions.json")
    assert json.loads((tmp_path / "predictions.json").read_text())[0]["image_id"] == rows[0]["id"]


def test_uncertain_flag_for_ambiguous_and_unfamiliar_images(trained):
    ws, ids, labels, vectors, model = trained
    centres = {c: vectors[np.asarray(labels) == c].mean(axis=0) for c in ("a", "b", "c")}
    typical = centres["a"][None]
    between = ((centres["a"] + centres["b"]) / 2)[None]
    far = (centres["a"] + 60.0)[None]
    from pixelmine.learn.predictions import build_predictions

    rows = []
    for x in (typical, between, far):
        probs, novelty = model.predict_features(x)
        rows += build_predictions(probs, novelty, model.classes, top_k=3, min_confidence=model.min_confidence,
                                  min_margin=model.min_margin, paths=[None])
    assert rows[0].label == "a" and not rows[0].uncertain
    assert rows[1].uncertain and "low confidence" in rows[1].reason
    assert rows[2].uncertain and "unlike the training images" in rows[2].reason and rows[2].novelty > 1


def test_model_loads_and_predicts_without_training_data(trained, tmp_path):
    ws, ids, labels, vectors, model = trained
    copy = tmp_path / "ws-copy"
    shutil.copytree(ws.root / "models", copy / "models")  # only the model folder: no catalog, no features
    fresh = pixelmine.open_workspace(copy)
    loaded = pixelmine.load_model(fresh, model.name)
    before, _ = model.predict_features(vectors[:10])
    after, _ = loaded.predict_features(vectors[:10])
    np.testing.assert_array_equal(before, after)
    assert loaded.classes == model.classes and repr(loaded).startswith(f"Model({model.name!r}")


def test_models_lists_finished_and_default_is_newest(trained):
    ws, *_ = trained
    listed = {m["name"]: m for m in ws.models()}
    assert listed["logreg-tiny"]["status"] == "ready" and listed["logreg-tiny"]["accuracy"] == 1.0
    newest = max((m for m in listed.values() if m["status"] == "ready"), key=lambda m: m["created_at"])
    assert ws.model().name == newest["name"]
    with pytest.raises(NotFittedError, match="no model named 'nope'.*models: "):
        ws.model("nope")


def test_evaluate_refuses_labels_the_model_never_saw(trained):
    ws, ids, labels, vectors, model = trained
    test_id = next(row["id"] for row in ws.images() if row["split"] == "test")
    old = next(row["label"] for row in ws.images() if row["id"] == test_id)
    ws.catalog.query("UPDATE images SET label = 'zebra' WHERE id = ?", (test_id,))
    try:
        with pytest.raises(InputError, match=r"not trained on: 'zebra'; the model knows 'a', 'b', 'c'"):
            model.evaluate(save=False)
    finally:
        ws.catalog.query("UPDATE images SET label = ? WHERE id = ?", (old, test_id))


# -- bad input ------------------------------------------------------------------------------------------
def test_no_labels_is_explained(tmp_path):
    source = image_folders(tmp_path / "images", {"x": 4})
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, progress=False, workers=1)  # no --labels-from-folders
    with pytest.raises(InputError, match=r"no labelled images.*4 usable images, none with a label.*"
                                         r"--labels-from-folders"):
        ws.train(progress=False, **FAST)
    assert ws.runs("train")[0]["status"] == "failed"


def test_single_class_is_explained(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"only": 5})
    with pytest.raises(InputError, match=r"all 5 labelled images .* have the same label 'only'.*at least 2 classes"):
        ws.train(progress=False, **FAST)


def test_class_with_one_image_is_explained_and_can_be_excluded(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"a": 12, "b": 12, "rare": 1})
    with pytest.raises(InputError, match=r"class 'rare' has only 1 image.*--exclude-class rare"):
        ws.train(progress=False, **FAST)
    model = ws.train(progress=False, exclude_classes=["rare"], **FAST)
    assert model.classes == ["a", "b"]


def test_unknown_settings_are_named(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"a": 4, "b": 4})
    with pytest.raises(InputError, match=r"unknown train option\(s\) 'epochz'"):
        ws.train(progress=False, epochz=3)
    with pytest.raises(InputError, match=r"unknown finetune option\(s\) 'finetune.epochz'"):
        ws.train("finetune", progress=False, finetune={"epochz": 3})
    with pytest.raises(InputError, match="the head 'forest' is not known; choose one of: auto, logreg, svm, knn, finetune"):
        ws.train("forest", progress=False)


def test_unknown_backbone_lists_the_choices(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"a": 4, "b": 4}, write_features=False)
    with pytest.raises(InputError, match="unknown backbone 'nothing_here'; choose one of: .*mobilenet_v2"):
        ws.train(progress=False, backbone="nothing_here")


def test_training_extracts_missing_features_and_predicts_new_files(tmp_path):
    """With a real (tiny) backbone: train extracts first; predict runs new files through the extraction
    pipeline without ingesting them; an undecodable file is an error row."""
    ws, *_ = labelled_workspace(tmp_path, {"a": 10, "b": 10}, write_features=False)
    model = ws.train("logreg", progress=False, backbone="tiny_test", search_budget_s=2, bootstrap=20, cv_folds=2)
    assert ws.runs("extract")[0]["status"] == "completed"
    assert model.info["feature_fingerprint"] == ws.features("tiny_test").fingerprint
    new = save(photo(999, (50, 40)), tmp_path / "new" / "fresh.jpg")
    (tmp_path / "new" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    predictions = model.predict([tmp_path / "new"])
    by_name = {p.path.rsplit("/", 1)[1]: p for p in predictions}
    assert by_name["fresh.jpg"].ok and by_name["fresh.jpg"].label in ("a", "b")
    assert not by_name["broken.jpg"].ok and "decode the image" in by_name["broken.jpg"].error
    assert str(new) not in {r["path"] for r in ws.images(status=None)}  # predicting is not ingesting


# -- leakage ---------------------------------------------------------------------------------------------
def test_exact_and_near_duplicates_never_straddle_splits(tmp_path):
    counts = {"a": 30, "b": 30}
    source = image_folders(tmp_path / "images", counts)
    # exact duplicates: the same bytes under a second name (one image id)
    for label in counts:
        for k in range(5):
            shutil.copy(source / label / f"{label}_{k:04d}.jpg", source / label / f"copy_{k}.jpg")
    # near-duplicates: different files (different ids) whose features are near-copies of another image's
    for label, offset in (("a", 100), ("b", 200)):
        for k in range(10):
            save(photo(offset + k), source / label / f"near_{k}.jpg")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    rows = ws.images()
    assert len(rows) == 80  # 60 originals + 20 near-duplicate files; the 10 byte-copies are no new images
    assert len(ws.status()["exact_duplicates"]) == 10
    by_path = {r["path"]: r for r in rows}
    ids = [r["id"] for r in rows]
    vectors = class_features([r["label"] for r in rows], dim=32, separation=3.0, noise=1.0)
    position = {i: k for k, i in enumerate(ids)}
    rng = np.random.default_rng(0)
    pairs = []
    for label in counts:
        for k in range(10):
            near = next(r for p, r in by_path.items() if p.endswith(f"/{label}/near_{k}.jpg"))
            original = next(r for p, r in by_path.items() if p.endswith(f"/{label}/{label}_{10 + k:04d}.jpg"))
            vectors[position[near["id"]]] = vectors[position[original["id"]]] + 0.01 * rng.standard_normal(32)
            pairs.append((near["id"], original["id"]))
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write(ids, vectors)
    model = ws.train(progress=False, **FAST)
    split_of = {r["id"]: r["split"] for r in ws.images()}
    assert all(split_of[a] == split_of[b] for a, b in pairs)
    assert model.metrics["split"]["grouped_images"] == 40 and model.metrics["split"]["straddling_groups"] == 0


def test_user_split_column_from_a_manifest(tmp_path):
    source = image_folders(tmp_path / "images", {"a": 10, "b": 10})
    manifest = tmp_path / "labels.csv"
    files = sorted(source.rglob("*.jpg"))
    with manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "fold"])
        for k, path in enumerate(files):
            writer.writerow([str(path), path.parent.name, ("train", "train", "train", "validation", "test")[k % 5]])
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(manifest=manifest, progress=False, workers=1)
    rows = ws.images()
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write([r["id"] for r in rows],
                                                       class_features([r["label"] for r in rows]))
    model = ws.train(progress=False, split={"column": "fold"}, **FAST)
    expected = {r["id"]: {"validation": "val"}.get(r["metadata"]["fold"], r["metadata"]["fold"]) for r in rows}
    assert {r["id"]: r["split"] for r in ws.images()} == expected
    assert model.metrics["split"]["source"] == "column:fold"


def test_label_corrections_are_applied(tmp_path):
    from pixelmine.corrections import record_correction
    from pixelmine.learn.data import labelled_images

    ws, ids, labels, _ = labelled_workspace(tmp_path, {"a": 10, "b": 10})
    relabelled, ignored = ids[labels.index("a")], ids[labels.index("b")]
    record_correction(ws.catalog, relabelled, "relabel", "b")
    record_correction(ws.catalog, ignored, "ignore")
    data = labelled_images(ws.catalog)
    assert data.ignored == 1 and len(data.ids) == 19 and ignored not in data.ids
    assert data.labels[data.ids.index(relabelled)] == "b"


def test_is_current_until_labels_change(tmp_path):
    from pixelmine.corrections import record_correction

    ws, ids, labels, _ = labelled_workspace(tmp_path, {"a": 8, "b": 8})
    model = ws.train(progress=False, **FAST)
    assert model.is_current()
    record_correction(ws.catalog, ids[0], "relabel", "b" if labels[0] == "a" else "a")
    assert not model.is_current()
