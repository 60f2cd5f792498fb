"""The audit-fix-retrain loop on planted truth: flipped labels and near-copies of test images are left out of
training, the test split is never touched, nothing is written into the user's files or labels, and the
before / after accuracies are measured on the same test images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from imagefactory import photo, save
from learnkit import BACKBONE, FINGERPRINT, class_features

import pixelmine
from pixelmine.cli import main
from pixelmine.features import FeatureStore

FLIPS_PER_CLASS = 6


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """3 classes x 50 images with 6 planted flips per class (filed under the next class's folder) and 12
    resized copies of other images, each copy given its original's features and label."""
    tmp = tmp_path_factory.mktemp("clean")
    classes = ["a", "b", "c"]
    true_of: dict[str, str] = {}
    flipped: set[str] = set()
    originals = []
    seed = 0
    for c, label in enumerate(classes):
        for k in range(50):
            folder = classes[(c + 1) % 3] if k < FLIPS_PER_CLASS else label
            path = save(photo(seed, (48, 40)), tmp / "images" / folder / f"{label}_{k:03d}.jpg")
            true_of[str(path)] = label
            if k < FLIPS_PER_CLASS:
                flipped.add(str(path))
            elif k >= 40:
                originals.append((path, label, seed))
            seed += 1
    copy_of: dict[str, str] = {}
    for path, label, image_seed in originals[:12]:
        copy = save(photo(image_seed, (48, 40)).resize((96, 80)), tmp / "images" / label / f"copy_{path.stem}.png")
        true_of[str(copy)] = label
        copy_of[str(copy)] = str(path)
    before = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in true_of}
    ws = pixelmine.open_workspace(tmp / "ws")
    ws.ingest(tmp / "images", labels_from_folders=True, progress=False, workers=1)
    rows = ws.images()
    by_path = {r["path"]: r for r in rows}
    # features from the true class; a copy carries its original's vector (what a network would give)
    vectors = dict(zip([r["path"] for r in rows],
                       class_features([true_of[r["path"]] for r in rows], separation=5.0, noise=1.0, seed=3)))
    for copy, original in copy_of.items():
        vectors[copy] = vectors[original] + 0.01
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write([by_path[p]["id"] for p in vectors],
                                                       np.stack(list(vectors.values())))
    ids_flipped = {by_path[p]["id"] for p in flipped}
    copy_pairs = [(by_path[c]["id"], by_path[o]["id"]) for c, o in copy_of.items()]
    return ws, ids_flipped, copy_pairs, before


OPTIONS = {"backbone": BACKBONE, "bootstrap": 100, "cv_folds": 3, "search_budget_s": 3,
           "split": {"near_duplicate_cosine": None}, "auto": {"backbones": (), "finetune": False}}


def test_clean_training_leaves_out_flips_and_leaking_copies_and_never_the_test_split(noisy):
    ws, flipped, copy_pairs, before = noisy
    plain = ws.train("logreg", name="plain", progress=False, **OPTIONS)
    cleaned = ws.train("logreg", name="cleaned", clean=True, progress=False, **OPTIONS)
    cleaning = json.loads((cleaned.dir / "cleaning.json").read_text())
    left_out = {item["image_id"]: item for item in cleaning["left_out"]}
    with np.load(plain.dir / "data.npz") as data:
        splits = dict(zip(data["ids"].tolist(), data["splits"].tolist()))
    assert all(item["split"] in ("train", "val") for item in left_out.values())
    assert not any(splits[i] == "test" for i in left_out)
    # planted flips in train / val: found, and little else
    flips_in_training = {i for i in flipped if splits[i] in ("train", "val")}
    issues = {i for i, item in left_out.items() if item["kind"] == "label_issue"}
    assert len(issues & flips_in_training) >= 0.8 * len(flips_in_training)
    assert len(issues - flipped) <= 0.25 * len(issues)
    # leaking copies: every train / val member of a copy group that has a member in test
    leaking = {c if splits[o] == "test" else o for c, o in copy_pairs
               if {splits[c], splits[o]} & {"test"} and {splits[c], splits[o]} & {"train", "val"}}
    copies = {i for i, item in left_out.items() if item["kind"] == "leaking_copy"}
    assert leaking <= copies and not copies - {i for pair in copy_pairs for i in pair}
    # the same test images, before and after; after is no worse here (planted noise is removed)
    assert cleaning["paired_accuracy_difference"]["n"] == plain.metrics["test"]["n"] == cleaned.metrics["test"]["n"]
    # "before" is the same head and settings on the uncleaned train + val: only the data differs
    counts = cleaned.metrics["split"]["counts"]
    assert cleaning["n_train_before"] == counts["train"] + counts["val"] + len(left_out)
    assert cleaning["after"]["metrics"]["accuracy"] >= cleaning["before"]["metrics"]["accuracy"]
    assert cleaned.metrics["split"]["counts"]["left_out"] == len(left_out)
    # nothing written into the user's files or the ingested labels
    for path, digest in before.items():
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest
    labels = {r["id"]: r["label"] for r in ws.images()}
    assert all(labels[i] == item["label"] for i, item in left_out.items())


def test_clean_preview_cli_lists_what_train_would_leave_out(noisy, tmp_path):
    ws, flipped, copy_pairs, before = noisy
    listed = tmp_path / "left-out.csv"
    result = CliRunner().invoke(main, ["clean", "--backbone", BACKBONE, "--output", str(listed), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "train --clean would leave out" in result.output and "label issue" in result.output
    rows = listed.read_text().splitlines()
    assert rows[0].startswith("image_id,path,label,split,kind") and len(rows) > 1
    plan = ws.clean_plan(backbone=BACKBONE)
    assert len(rows) - 1 == len(plan.left_out)
    trained = CliRunner().invoke(main, ["train", "--head", "logreg", "--backbone", BACKBONE, "--clean",
                                        "--name", "cli-clean", "--search-budget", "2", "-w", str(ws.root)])
    assert trained.exit_code == 0, trained.output
    assert "clean loop:" in trained.output and "before" in trained.output and "paired 95 % CI" in trained.output
    assert "How the training data was cleaned" in ws.model("cli-clean").card


def test_clean_without_findings_runs_discovery_first(tmp_path):
    from learnkit import labelled_workspace

    ws, *_ = labelled_workspace(tmp_path, {"a": 15, "b": 15})
    model = ws.train("logreg", clean=True, progress=False, **{**OPTIONS, "split": {}})
    assert model.metrics["cleaning"]["discover_run"] is not None
    assert {r["kind"] for r in ws.runs()} >= {"discover", "train"}
