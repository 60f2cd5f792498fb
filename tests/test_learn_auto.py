"""Automatic model selection (``head="auto"``, the default of ``pixelmine train``) on planted truth: the
feature set, framing and head known to be best on a constructed problem are the ones chosen; the budget is
honoured; the test split is never read."""

from __future__ import annotations


import numpy as np
import pytest
from click.testing import CliRunner
from imagefactory import save
from learnkit import image_folders
from PIL import Image

import pixelmine
from pixelmine.cli import main
from pixelmine.features import FeatureStore
from pixelmine.learn.auto import FeatureSource, select
from pixelmine.learn.config import TrainConfig
from pixelmine.learn.data import ensure_splits, labelled_images


def _synthetic(ws, name: str, vectors: np.ndarray, ids: list[str]) -> None:
    FeatureStore(ws.root, name, f"fp-{name}").write(ids, vectors.astype(np.float32))


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    """120 images of 4 classes with synthetic feature sets of known quality."""
    tmp = tmp_path_factory.mktemp("auto")
    ws = pixelmine.open_workspace(tmp / "ws")
    ws.ingest(image_folders(tmp / "images", {c: 40 for c in "abcd"}), labels_from_folders=True, progress=False,
              workers=1)
    rows = ws.images()
    ids, labels = [r["id"] for r in rows], np.asarray([r["label"] for r in rows])
    rng = np.random.default_rng(0)
    n = len(ids)
    k = np.searchsorted(list("abcd"), labels)
    pair, within = k // 2, k % 2  # a, b | c, d
    noise = lambda dim: rng.standard_normal((n, dim))  # noqa: E731
    _synthetic(ws, "noise", noise(8), ids)
    # each class in two opposite clusters on a circle (a b c d a b c d around it): a linear score is
    # unimodal around a circle, so no linear head gives a class two opposite arcs; kNN does
    angle = (k + 4 * rng.integers(0, 2, n)) * (np.pi / 4) + 0.05 * noise(1)[:, 0]
    _synthetic(ws, "interleaved", np.stack([np.cos(angle), np.sin(angle)], axis=1), ids)
    _synthetic(ws, "pair_only", np.hstack([pair[:, None] * 4.0, np.zeros((n, 1))]) + noise(2) * 0.5, ids)
    _synthetic(ws, "within_only", np.hstack([within[:, None] * 4.0, np.zeros((n, 1))]) + noise(2) * 0.5, ids)
    return ws, ids, labels


def _split(ws, **auto):
    config = TrainConfig.from_mapping({"backbone": "noise", "cv_folds": 3, "bootstrap": 20,
                                       "auto": {"finetune": False, "min_screen_images": 40, **auto}})
    data = labelled_images(ws.catalog)
    split = ensure_splits(ws.catalog, data, config.split, None)
    return config, split


def test_the_head_that_fits_the_geometry_wins(four_classes):
    """Each class in two separate clusters, interleaved along a line: a linear head cannot, kNN can."""
    ws, ids, labels = four_classes
    config, split = _split(ws)
    selection = select(ws.root, split, config, feature_sets=["noise", "interleaved"])
    assert (selection.features, selection.head) == ("interleaved", "knn")
    board = {t["candidate"]: t for t in selection.leaderboard() if t["rung"] == "final"}
    assert board["knn on interleaved"]["score"] > 0.9 > 0.75 > board["logreg on interleaved"]["score"]


def test_two_feature_sets_that_each_see_half_are_concatenated(four_classes):
    """One set tells {a,b} from {c,d}, the other a from b and c from d: each alone is at 50 %, both 100 %."""
    ws, ids, labels = four_classes
    config, split = _split(ws, heads=("logreg", "svm"))
    selection = select(ws.root, split, config, feature_sets=["noise", "pair_only", "within_only"])
    assert selection.head in ("logreg", "svm")
    assert sorted(selection.features.split("+")) == ["pair_only", "within_only"]
    board = {(t["features"], t["head"]): t["score"] for t in selection.leaderboard() if t["rung"] == "final"}
    assert board[(selection.features, "logreg")] > 0.95
    assert max(board[("pair_only", "logreg")], board[("within_only", "logreg")]) < 0.65


def test_cheap_first_and_the_test_split_is_never_read(four_classes, monkeypatch):
    ws, ids, labels = four_classes
    config, split = _split(ws, min_screen_images=20, max_screen_images=20)
    asked: list[str] = []
    original = FeatureSource.vectors

    def spy(self, name, wanted):
        asked.extend(wanted)
        return original(self, name, wanted)

    monkeypatch.setattr(FeatureSource, "vectors", spy)
    selection = select(ws.root, split, config, feature_sets=["noise", "pair_only", "within_only", "interleaved"])
    test_ids = {i for i, s in zip(split.ids, split.splits) if s == "test"}
    assert asked and not test_ids & set(asked)
    screened = {t["features"] for t in selection.leaderboard() if t["rung"] == "screen"}
    final = {t["features"] for t in selection.leaderboard() if t["rung"] == "final"}
    n_tv = int((split.splits != "test").sum())
    assert screened == {"noise", "pair_only", "within_only", "interleaved"}
    # successive halving: only the two best sets (plus the reference, cached anyway) reach all of train + val
    assert len(final - {"noise"} - {f for f in final if "+" in f}) == 2
    assert {t["n_images"] for t in selection.leaderboard() if t["rung"] == "screen"} == {20}
    assert {t["n_images"] for t in selection.leaderboard() if t["rung"] == "final"} == {n_tv}


def test_a_zero_budget_still_gives_a_model_and_says_what_it_cut(four_classes):
    ws, ids, labels = four_classes
    model = ws.train(name="tiny-budget", backbone="noise", progress=False, bootstrap=20, cv_folds=3,
                     auto={"budget_s": 0, "finetune": False, "backbones": ()})
    assert (model.head, model.backbone) == ("logreg", "noise")  # the reference probe always runs
    selection = model.metrics["selection"]
    assert any(t["status"] == "skipped" and "budget" in t["reason"] for t in selection["leaderboard"])
    assert any("budget cut" in note for note in model.metrics["notes"])
    assert "How this model was chosen" in model.card


def _framed(root, counts: dict[str, tuple[int, tuple[int, int, int]]], side: int = 96, frame: int = 3):
    """Classes told apart only by the colour of a thin frame: the standard centre crop cuts it off."""
    rng = np.random.default_rng(5)
    for label, (n, colour) in counts.items():
        for k in range(n):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            pixels[:frame], pixels[-frame:], pixels[:, :frame], pixels[:, -frame:] = colour, colour, colour, colour
            save(Image.fromarray(pixels), root / label / f"{label}_{k:03d}.png")
    return root


def test_auto_finds_the_framing_a_planted_cue_needs_end_to_end(tmp_path):
    source = _framed(tmp_path / "images", {"red": (30, (255, 0, 0)), "blue": (30, (0, 0, 255))})
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    config = tmp_path / "train.toml"
    config.write_text('[train]\nbackbone = "tiny_test"\ncv_folds = 3\nbootstrap = 50\n'
                      '[train.auto]\nbackbones = []\nfinetune = false\nmin_screen_images = 40\n')
    result = CliRunner().invoke(main, ["train", "--config", str(config), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "automatic selection" in result.output and "chosen:" in result.output
    model = ws.model("auto")
    assert model.backbone == "full:tiny_test@224"  # the whole frame; the 64 px crop of 72 loses the frame
    assert model.test_evaluation().metrics["accuracy"] == 1.0
    board = {t["features"]: t["score"] for t in model.metrics["selection"]["leaderboard"]
             if t["head"] == "logreg" and t["rung"] == "final"}
    assert board["full:tiny_test@224"] > 0.95 and board["tiny_test"] < 0.8
    run = ws.runs("train")[0]
    assert run["metrics"]["selection"]["chosen"]["features"] == "full:tiny_test@224"
    assert run["metrics"]["backbone"] == "full:tiny_test@224"
    assert model.predict([ws.images()[0]["path"]])[0].ok


def test_a_joined_model_predicts_new_files_with_both_networks(tmp_path):
    source = _framed(tmp_path / "images", {"red": (12, (255, 0, 0)), "blue": (12, (0, 0, 255))})
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    model = ws.train("logreg", backbone="tiny_test+full:tiny_test@96", progress=False, bootstrap=10, cv_folds=2)
    assert model.info["feature_sources"][1]["backbone"] == "full:tiny_test@96"
    fresh = tmp_path / "fresh.png"
    pixels = np.random.default_rng(9).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    Image.fromarray(pixels).save(fresh)
    predicted = model.predict([str(fresh), str(tmp_path / "missing.png")])
    assert predicted[0].label == "red" and predicted[1].error
    assert model.is_current()


def test_fine_tuning_is_tried_when_the_budget_allows_it(tmp_path):
    source = _framed(tmp_path / "images", {"red": (16, (255, 0, 0)), "blue": (16, (0, 0, 255))})
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    model = ws.train(backbone="tiny_test", progress=False, bootstrap=10, cv_folds=2,
                     auto={"backbones": (), "full_frame": False, "budget_s": 600, "min_screen_images": 20},
                     finetune={"epochs": 1, "batch_size": 8, "tta": False})
    tried = [t for t in model.metrics["selection"]["leaderboard"] if t["rung"] == "finetune"]
    assert len(tried) == 1 and tried[0]["score"] is not None
    plan = model.metrics["selection"]["finetune"]
    assert plan["affordable"] and plan["probe_val_accuracy"] is not None
    won = plan["val_accuracy"] > plan["probe_val_accuracy"]
    assert model.kind == ("finetune" if won else "probe")
    assert (model.dir / "weights.pt").exists() == won


def test_when_the_budget_stops_the_final_rung_the_screen_decides(four_classes, monkeypatch):
    ws, ids, labels = four_classes
    config, split = _split(ws, budget_s=60)
    # pretend extracting more than the screen's images would take far longer than the budget
    monkeypatch.setattr(FeatureSource, "estimate",
                        lambda self, name, wanted: 0.0 if name == "noise" or len(wanted) <= 40 else 1e6)
    selection = select(ws.root, split, config, feature_sets=["noise", "interleaved"])
    assert (selection.features, selection.head) == ("interleaved", "knn")
    assert any("chosen on the 40-image screen" in note for note in selection.notes)
    assert any(t["status"] == "skipped" and t["features"] == "interleaved" and t["rung"] == "final"
               for t in selection.leaderboard())


def test_candidates_are_every_backbone_here_in_both_framings_at_the_images_own_size(tmp_path):
    from pixelmine.learn.candidates import candidate_feature_sets, full_frame_size

    source = _framed(tmp_path / "images", {"red": (3, (255, 0, 0)), "blue": (3, (0, 0, 255))}, side=260)
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    assert full_frame_size(ws.catalog) == 260
    assert full_frame_size(ws.catalog, max_side=240) == 240
    names, notes = candidate_feature_sets(ws.catalog, ws.root, "tiny_test", ("tiny_test", "no_such_network"))
    assert names == ["tiny_test", "full:tiny_test@260"]
    assert len(notes) == 1 and "no_such_network left out" in notes[0]
    with pytest.raises(pixelmine.InputError, match="unknown backbone"):  # one the user named is an error
        candidate_feature_sets(ws.catalog, ws.root, "tiny_test", (), user_named=("no_such_network",))
