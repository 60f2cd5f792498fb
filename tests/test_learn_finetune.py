"""Fine-tuning on the tiny test backbone: epochs run, checkpoints are written, a resumed run is identical to an
uninterrupted one, and the saved network predicts files."""

import json

import numpy as np
import pytest
import torch
from learnkit import tinted_workspace

import pixelmine
from pixelmine.learn.network import FinetuneNet, backbone_blocks, set_trainable

SMALL = {"backbone": "tiny_test", "bootstrap": 20, "cv_folds": 2, "search_budget_s": 1,
         "finetune": {"frozen_epochs": 1, "epochs": 2, "batch_size": 8, "patience": 0, "lr": 0.05,
                      "backbone_lr": 0.015, "unfreeze_blocks": 2}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tinted_workspace(tmp_path_factory.mktemp("finetune"), {"red": (14, (230, 40, 40)), "blue": (14, (40, 40, 230))})


def _weights(model):
    return torch.load(model.dir / "weights.pt", map_location="cpu", weights_only=True)


def test_finetune_trains_checkpoints_and_predicts(workspace):
    epochs = []
    model = workspace.train("finetune", name="ft", progress=False, on_epoch=epochs.append, **SMALL)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["phase"] for e in epochs] == ["frozen", "unfrozen", "unfrozen"]
    assert all(np.isfinite(e["train_loss"]) and e["val_loss"] is not None for e in epochs)
    checkpoints = sorted(p.name for p in (model.dir / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "epoch-003.pt"]  # only the newest epoch is kept, plus the best
    history = json.loads((model.dir / "history.json").read_text())
    assert history["epoch"] == 3 and 1 <= history["best_epoch"] <= 3
    assert model.kind == "finetune" and model.info["network"]["input_size"] == 64
    # red vs blue is learnable even by a tiny network in three epochs
    assert model.metrics["test"]["metrics"]["accuracy"] >= 0.75
    files = [r["path"] for r in workspace.images()][:4]
    predictions = model.predict(files + ["/no/such/file.jpg"], top_k=2)
    assert [p.ok for p in predictions] == [True] * 4 + [False]
    assert all(p.label in ("red", "blue") and p.novelty is not None for p in predictions[:4])
    # out-of-fold probabilities come from a probe on the pretrained features, for every labelled image
    assert len(model.oof()["ids"]) == 28 and "logreg on pretrained tiny_test" in model.metrics["oof_model"]
    assert model.evaluate(n_bootstrap=10, save=False).n == model.info["n_test"]


def test_resume_after_interruption_is_identical_to_an_uninterrupted_run(workspace):
    reference = workspace.train("finetune", name="ft-ref", progress=False, **SMALL)

    def stop_after_second_epoch(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        workspace.train("finetune", name="ft-resumed", progress=False, on_epoch=stop_after_second_epoch, **SMALL)
    listed = {m["name"]: m for m in workspace.models()}
    assert listed["ft-resumed"] == {"name": "ft-resumed", "status": "unfinished", "resumable": True}
    assert workspace.runs("train")[0]["status"] == "interrupted"
    seen = []
    resumed = workspace.train("finetune", name="ft-resumed", progress=False, resume=True, on_epoch=seen.append,
                              **SMALL)
    assert [e["epoch"] for e in seen] == [3]  # only the epoch that was missing
    a, b = _weights(reference), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.metrics["test"]["metrics"] == reference.metrics["test"]["metrics"]


def test_blocks_and_freezing_of_a_real_backbone():
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    blocks = backbone_blocks(net)
    assert len(blocks) == 19  # features[0..18]; the classifier's Linear joins the top block
    wrapped = FinetuneNet(torch.nn.Sequential(net.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 1280, 3)
    unfrozen = set_trainable(wrapped, 3)
    trainable = {id(p) for p in wrapped.parameters() if p.requires_grad}
    assert {id(p) for p in unfrozen} <= trainable
    assert {id(p) for p in net.features[15].parameters()}.isdisjoint(trainable)
    assert {id(p) for p in net.features[16].parameters()} <= trainable
    assert {id(p) for p in wrapped.classifier.parameters()} <= trainable


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_initialisation_reproduces_the_logistic_probe(n_classes):
    from pixelmine.learn.config import TrainConfig
    from pixelmine.learn.finetune import probe_initialise
    from pixelmine.learn.heads import LogisticProbe

    rng = np.random.default_rng(0)
    labels = np.asarray(["a", "b", "c"][:n_classes])[rng.integers(0, n_classes, 120)]
    X = (rng.standard_normal((120, 6)) * [1, 2, 3, 4, 5, 6] + 3).astype(np.float32)
    X[:, 0] += (labels == "a") * 2.0
    net = FinetuneNet(torch.nn.Identity(), 6, n_classes, dropout=0.0).eval()
    train, val = np.arange(90), np.arange(90, 120)
    chosen = probe_initialise(net, X, labels, train, val, TrainConfig(search_budget_s=5))
    probe = LogisticProbe(standardize=False, **chosen["params"]).fit(X[train], labels[train])
    with torch.no_grad():
        logits, _ = net(torch.as_tensor(X))
    np.testing.assert_allclose(torch.softmax(logits.double(), 1).numpy(), probe.predict_proba(X), atol=1e-5)


def test_exact_augmentation_only_moves_pixels():
    from pixelmine.learn.config import FinetuneConfig
    from pixelmine.learn.network import augmentation

    config = FinetuneConfig(crop_scale=None, hflip=True, vflip=True, turns=4, rotation=0.0, color_jitter=0.0)
    augment = augmentation(config, 32, "bilinear")
    assert not augment.resizes
    chw = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = augment(chw)
        assert out.shape == chw.shape
        assert torch.equal(out.flatten().sort().values, chw.flatten().sort().values)  # a permutation of pixels
        seen.add(out.numpy().tobytes())
    assert len(seen) > 4  # and it does move them


def test_half_turns_keep_a_diagonal_orientation():
    from pixelmine.learn.config import FinetuneConfig
    from pixelmine.learn.network import augmentation

    config = FinetuneConfig(crop_scale=None, hflip=False, vflip=False, turns=2, rotation=0.0, color_jitter=0.0)
    augment = augmentation(config, 8, "bilinear")
    chw = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8).repeat(3, 1, 1)
    outputs = {augment(chw).numpy().tobytes() for _ in range(20)}
    assert outputs == {chw.numpy().tobytes(), torch.rot90(chw, 2, dims=(1, 2)).numpy().tobytes()}


def test_test_time_views_are_the_moves_training_used():
    from pixelmine.learn.config import FinetuneConfig
    from pixelmine.learn.network import tta_moves, tta_views

    diagonal = FinetuneConfig(crop_scale=None, hflip=False, vflip=False, turns=2)
    assert tta_moves(diagonal) == ["rot180"]  # no mirror image of a diagonal weave
    assert tta_moves(FinetuneConfig(hflip=True, vflip=True, turns=4)) == ["hflip", "vflip", "rot180", "rot90",
                                                                           "rot270"]
    assert tta_moves(FinetuneConfig(hflip=True, tta=False)) == []
    nhwc = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 4, 4, 3)
    plain, half = tta_views(nhwc, ["rot180"])
    assert torch.equal(plain, nhwc)
    assert torch.equal(half[:, 0, 0], nhwc[:, 3, 3]) and torch.equal(half[:, 1, 2], nhwc[:, 2, 1])
    views = tta_views(nhwc, ["hflip", "vflip", "rot90", "rot270"])
    assert len(views) == 5
    assert torch.equal(views[1][:, 0, 0], nhwc[:, 0, 3]) and torch.equal(views[2][:, 0, 0], nhwc[:, 3, 0])
    assert torch.equal(torch.rot90(views[3], 1, dims=(1, 2)), nhwc.flip(1, 2))  # 90 + 90 = 180
    assert torch.equal(torch.rot90(views[4], 1, dims=(1, 2)), nhwc)  # 270 + 90 = 360
    wide = torch.zeros(1, 4, 6, 3)
    assert len(tta_views(wide, ["rot90", "rot180"])) == 2  # quarter turns need a square input
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        tta_views(nhwc, ["twirl"])


def test_numpy_test_time_views_equal_the_training_ones():
    from pixelmine.learn.network import tta_views
    from pixelmine.learn.tta import views

    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    moves = ["hflip", "vflip", "rot180", "rot90", "rot270"]
    for ours, theirs in zip(views(pixels, moves), tta_views(torch.from_numpy(pixels), moves), strict=True):
        np.testing.assert_array_equal(ours, theirs.numpy())


def test_a_saved_finetuned_model_predicts_as_its_training_run_measured(workspace):
    """Prediction runs the exported network (the one embedder); training measured the test split with the
    eager PyTorch network and the same test-time moves. Both must give the same numbers."""
    from pixelmine.learn.finetuned_model import FinetunedModel

    model = workspace.train("finetune", name="ft-tta", progress=False,
                            **{**SMALL, "finetune": {**SMALL["finetune"], "hflip": True, "tta": True}})
    assert isinstance(model, FinetunedModel) and model.moves == ["hflip"]
    measured = model.test_evaluation().metrics
    again = model.evaluate(n_bootstrap=0, save=False).metrics
    for name in ("accuracy", "macro_f1", "log_loss"):
        assert again[name] == pytest.approx(measured[name], abs=1e-4), name


def test_a_finetuned_network_is_a_backbone(workspace):
    model = workspace.train("finetune", name="ft-backbone", progress=False, **SMALL)
    result = workspace.extract("model:ft-backbone", progress=False)
    features = result.features()
    assert result.backbone == "model:ft-backbone" and result.computed == 28 and features.dim == 16
    tags = workspace.tags("model:ft-backbone")
    by_label = {row["id"]: row["label"] for row in workspace.images()}
    # its "tags" are its own classes: on this easy task the top tag is mostly the true label
    agree = np.mean([tags[i][0][0] == by_label[i] for i in features.ids])
    assert {t[0] for t in tags[features.ids[0]]} <= {"red", "blue"} and agree >= 0.75
    # discovery and similarity search run on the fine-tuned features
    found = workspace.discover(backbone="model:ft-backbone", only=["outliers"], progress=False)
    assert found.counts["outlier"]["findings"] == 28
    first = workspace.images()[0]
    assert workspace.similar(first["path"], k=3, backbone="model:ft-backbone")[0].image_id == first["id"]
    # retraining under the same name gives new weights, so a new fingerprint: vectors never mix
    workspace.train("finetune", name="ft-backbone", progress=False, seed=7, **SMALL)
    assert workspace.extract("model:ft-backbone", progress=False).fingerprint != result.fingerprint
    workspace.train("logreg", name="probe-model", progress=False, **{k: v for k, v in SMALL.items()
                                                                      if k != "finetune"})
    with pytest.raises(pixelmine.InputError, match="not a fine-tuned network"):
        workspace.extract("model:probe-model", progress=False)
    assert model.as_backbone == "model:ft-backbone"
